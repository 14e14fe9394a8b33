"""hdetach: a drop-in torch.nn.LSTM whose training gradient can be modified by h-detach."""

__version__ = "0.1.0"
