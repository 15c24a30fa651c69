"""StyleGAN2-ADA networks, augmentation, losses, training loop, checkpoints and sampling."""
