"""``python -m mllib.flower``: the course's FedAvg on Flower's deployment runtime, on loopback."""
from .deploy import main

main()
