"""Training (PyTorch): dataset preparation, balancing, the network, optimisation, checkpoints.

``prepare``, ``stats``, ``balance``, ``schedule`` and ``config`` need no PyTorch; the rest
needs ``pip install tseg-rt[train]``.
"""
