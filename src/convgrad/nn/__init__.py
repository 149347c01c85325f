"""``convgrad.nn``: modules, parameters, initialisation and the functional API."""

from convgrad.nn import functional, init, utils
from convgrad.nn.activation import ELU, GELU, LeakyReLU, LogSoftmax, Softmax
from convgrad.nn.adaptive import AdaptiveAvgPool2d, AdaptiveMaxPool2d
from convgrad.nn.batchnorm import BatchNorm1d, BatchNorm2d
from convgrad.nn.conv import Conv1d, Conv2d, ConvTranspose1d, ConvTranspose2d
from convgrad.nn.layers import (
    AvgPool1d,
    AvgPool2d,
    Dropout,
    Flatten,
    Identity,
    Linear,
    MaxPool1d,
    MaxPool2d,
    ModuleList,
    ReLU,
    Sequential,
    Sigmoid,
    Tanh,
)
from convgrad.nn.loss import CrossEntropyLoss
from convgrad.nn.module import Module, Parameter, RemovableHandle
from convgrad.nn.summary import Summary, summary

__all__ = [
    "AdaptiveAvgPool2d",
    "AdaptiveMaxPool2d",
    "AvgPool1d",
    "AvgPool2d",
    "Conv1d",
    "BatchNorm1d",
    "BatchNorm2d",
    "Conv2d",
    "ConvTranspose1d",
    "ConvTranspose2d",
    "CrossEntropyLoss",
    "ELU",
    "GELU",
    "Dropout",
    "Flatten",
    "Identity",
    "LeakyReLU",
    "Linear",
    "LogSoftmax",
    "MaxPool1d",
    "MaxPool2d",
    "Module",
    "ModuleList",
    "Parameter",
    "ReLU",
    "RemovableHandle",
    "Sequential",
    "Sigmoid",
    "Softmax",
    "Summary",
    "Tanh",
    "functional",
    "init",
    "summary",
    "utils",
]
