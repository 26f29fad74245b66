"""Entry points above every package: the `fine` script (the method's commands, `serve` and `worker`)."""
