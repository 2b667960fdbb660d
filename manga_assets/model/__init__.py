"""ConvLSTM autoencoders (plain and variational), their training and inference, in plain torch.

Nothing here is imported by the code location at load time: torch is heavy, so the Dagster layer
imports these modules inside the functions that need them.
"""
