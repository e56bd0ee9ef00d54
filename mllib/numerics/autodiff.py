"""Reverse-mode automatic differentiation on scalars: the idea behind every framework.

Each ``Value`` remembers the values it was computed from and the local derivative of the
operation; ``backward`` visits the graph in reverse topological order and applies the chain
rule, d out / d x = sum over the uses u of x of (d out / d u) (d u / d x) (Linnainmaa 1970;
Griewank and Walther 2008, "Evaluating derivatives", Sec. 3.2). PyTorch's autograd does
the same on tensors.
"""
import math

from ..constraints import Instance, Real, constrain


class Value:
    """A scalar that records how it was computed.

    Attributes:
        data: the float value.
        grad: d(output)/d(this value), filled by ``backward`` on the output.
    """

    @constrain(data=Real(infinite=True), parents=Instance(tuple), local=Instance(tuple))
    def __init__(self, data: float, parents: tuple = (), local: tuple = ()):
        self.data = float(data)
        self.grad = 0.0
        self._parents = parents  # the Values this one was computed from
        self._local = local  # d self / d parent, one per parent

    def __repr__(self) -> str:
        return f"Value({self.data:.4g}, grad={self.grad:.4g})"

    def __add__(self, other):
        other = other if isinstance(other, Value) else Value(other)
        return Value(self.data + other.data, (self, other), (1.0, 1.0))

    def __mul__(self, other):
        other = other if isinstance(other, Value) else Value(other)
        return Value(self.data * other.data, (self, other), (other.data, self.data))

    def __pow__(self, k: float):
        return Value(self.data**k, (self,), (k * self.data ** (k - 1),))

    def __neg__(self):
        return self * -1.0

    def __sub__(self, other):
        return self + (-other if isinstance(other, Value) else Value(-other))

    def __truediv__(self, other):
        return self * (other if isinstance(other, Value) else Value(other)) ** -1.0

    __radd__ = __add__
    __rmul__ = __mul__

    def __rsub__(self, other):
        return Value(other) - self

    def __rtruediv__(self, other):
        return Value(other) / self

    def exp(self):
        e = math.exp(self.data)
        return Value(e, (self,), (e,))

    def log(self):
        return Value(math.log(self.data), (self,), (1.0 / self.data,))

    def tanh(self):
        t = math.tanh(self.data)
        return Value(t, (self,), (1 - t * t,))

    def relu(self):
        return Value(max(self.data, 0.0), (self,), (float(self.data > 0),))

    def backward(self) -> None:
        """Fill ``grad`` of every Value this one depends on with d self / d that Value.

        1. order the graph topologically (depth-first); 2. seed d self / d self = 1;
        3. in reverse order, add each node's grad times the local derivative to its parents.
        """
        order, seen = [], set()

        def visit(v):
            if id(v) not in seen:
                seen.add(id(v))
                for p in v._parents:
                    visit(p)
                order.append(v)

        visit(self)
        for v in order:
            v.grad = 0.0
        self.grad = 1.0
        for v in reversed(order):
            for parent, local in zip(v._parents, v._local):
                parent.grad += v.grad * local
