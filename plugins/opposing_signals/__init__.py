"""Opposing signals: which groups of training samples pull the network in opposite directions, over
which feature, and did they make the loss spike?"""
