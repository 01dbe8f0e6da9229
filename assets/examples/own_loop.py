"""TrainDx in a training loop of your own: digits, a small MLP, plain PyTorch.

    .venv/bin/python assets/examples/own_loop.py            # writes runs/own-loop.h5
    .venv/bin/traindx gui runs/own-loop.h5                   # follow it live (start it while this runs)
    .venv/bin/traindx report runs/own-loop.h5 --out own-loop.html
"""
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch.utils.data import DataLoader, TensorDataset

import traindx

torch.manual_seed(0)
digits = load_digits()
x = torch.tensor(digits.images / 16.0, dtype=torch.float32).flatten(1)
y = torch.tensor(digits.target)
train_ds, val_ds = TensorDataset(x[:1400], y[:1400]), TensorDataset(x[1400:], y[1400:])
loader = DataLoader(train_ds, batch_size=64, shuffle=True)

model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
epochs = 30

with traindx.watch(model, optimizer, out="runs/own-loop.h5", train_data=train_ds, val_data=val_ds,
                   steps=epochs * len(loader), batch_size=loader.batch_size, overwrite=True,
                   plugins={"sharpness": {"every": 50}, "calibration": {}}) as dx:
    for epoch in range(epochs):
        for xb, yb in loader:
            loss = F.cross_entropy(model(xb), yb)
            optimizer.zero_grad()
            loss.backward()
            dx.step(loss)                     # after backward, before optimizer.step()
            optimizer.step()
print("wrote runs/own-loop.h5")
