"""``convgrad.nn``: modules, parameters, initialisation and the functional API."""

from convgrad.nn import functional, init
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
from convgrad.nn.module import Module, Parameter
from convgrad.nn.summary import Summary, summary

__all__ = [
    "AvgPool1d",
    "AvgPool2d",
    "Conv1d",
    "Conv2d",
    "ConvTranspose1d",
    "ConvTranspose2d",
    "Dropout",
    "Flatten",
    "Identity",
    "Linear",
    "MaxPool1d",
    "MaxPool2d",
    "Module",
    "ModuleList",
    "Parameter",
    "ReLU",
    "Sequential",
    "Sigmoid",
    "Summary",
    "Tanh",
    "functional",
    "init",
    "summary",
]
