"""The training runtime shared by the VQ-VAEs, the prior and the upsamplers."""
