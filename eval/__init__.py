"""Evaluation (FID/KID/precision-recall, LPIPS diversity, memorisation) and the style-transfer refiner."""
