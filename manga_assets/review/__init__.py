"""The human loop: labels that last, a review queue that learns from them, calibrated lists."""
