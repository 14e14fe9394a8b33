"""The lab's side of the gradient-path analysis: ``hdetach analyze`` (the weight-scale
study, trained runs), gradient tracking during training, and their plots. The
measurement itself is the library's ``hdetach.analysis``."""
