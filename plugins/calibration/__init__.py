"""Calibration: can the model's confidence be trusted, and when did it stop being trustworthy?"""
