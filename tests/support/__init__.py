"""What tests share: helpers that test modules import, so that no test module imports another."""
