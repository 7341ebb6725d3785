"""The lab's experiments, one question per module (see :mod:`droplab.lab.registry`)."""
