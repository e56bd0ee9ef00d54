"""Beyond one machine, server side: the course's federated algorithms as a Flower app.

The client matrix of the simulation maps onto Flower's messages:

- row i of the client matrix is SuperNode i (node config ``partition-id=i``), which holds
  only its partition of the digits and its own minibatch generator;
- the server broadcast "every row starts from x" is one train ``Message`` per SuperNode,
  whose ``ArrayRecord`` carries x (and SCAFFOLD's server control variate c);
- each reply carries the row's update U_i = y_i - x (an ``ArrayRecord``), its size and
  partition id (a ``MetricRecord``), and SCAFFOLD's c_i+ - c_i; a node keeps c_i and its
  generators in ``context.state`` between rounds;
- the server stacks the replies into U (n, d) in partition order and takes the same step
  as the simulation: ``engine.weighted_mean``, a ``mllib.robust`` aggregator,
  ``privacy.dp_fedavg_aggregate``, and SCAFFOLD's ``control_variate_step``.

The run is the round engine's (``mllib.engine``): Flower's server runs ``engine.run`` on the
``engine.Federated`` that ``task.simulate`` runs, the same server parts (selection, aggregate,
server step: ``task.server_parts``), with the SuperNodes as its local part; each SuperNode runs
the simulation's local part (``mllib.LocalSGD``, SCAFFOLD's update) and message transforms on
its row. Flower's ``Grid`` carries the messages; Flower's own round loop (``Strategy.start``)
is not used.

Modules: ``task`` (settings, federation, generators, the shared parts, the in-process
``simulate``), ``client_app`` (the ClientApp), ``server_app`` (the ServerApp), ``records``
(rows in and out of ``ArrayRecord``), ``deploy`` (a SuperLink and SuperNodes on loopback,
``flwr run``). The Flower app's configuration is ``mllib/flower/app/pyproject.toml``.
``secaggplus``: Flower's own secure aggregation (SecAgg+) around the same clients, a second app
(``mllib/flower/secaggplus_app``) on the same deployment. Needs the ``flower`` extra:
``pip install -e ".[flower]"``.
"""
