"""The SecAgg+ ClientApp, kept thin: Flower starts a fresh ``flwr-clientapp`` process for each of the
protocol's four stages, and ``secaggplus_mod`` runs three of them (keys, shares, unmasking) with
Flower's code alone. Only the stage that trains calls ``client_fn``, which imports mllib (and
torch): the other three stages skip that import. Flower ships this file in the app and puts the
app's folder on the path of the process."""
from flwr.app import Context
from flwr.client.mod import secaggplus_mod
from flwr.clientapp import ClientApp


def client_fn(context: Context):
    from mllib.flower.secaggplus import Trainer  # imported by the training stage only

    return Trainer(context).to_client()


client = ClientApp(client_fn=client_fn, mods=[secaggplus_mod])
