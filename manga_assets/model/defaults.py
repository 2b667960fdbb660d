"""The training defaults, written once.

The trainer (`train.TrainConfig`), the model (`autoencoder.ModelConfig`), the quality gate
(`quality`) and the Dagster configuration of the ``model`` assets all read them from here. This
module imports nothing, so the code location can import it without torch.
"""

EPOCHS = 24
BATCH_SIZE = 32
# Most optimisation steps: on a large release this, not EPOCHS, ends the schedule (a DR17-sized
# training split of 8,500 galaxies gets 6 epochs). The science benchmark's 1,316 training
# galaxies take about 1,000 steps in 24 epochs, so it never binds below about 2,000.
MAX_STEPS = 1500
LEARNING_RATE = 2e-3
SEED = 0
# Epochs without a better typical validation galaxy before training stops.
PATIENCE = 8
DEVICE = "auto"
LATENT_DIM = 32
# Weight of the VAE's KL term (1: the ELBO).
BETA = 1.0
# The gate: the lower end of the 95 % interval of the typical galaxy's FEV must reach this.
MIN_FEV = 0.5
