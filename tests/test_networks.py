"""A second network in one module: the chapter's ConvNet with a bias on its dense layer, trained,
checkpointed, resumed and evaluated through the unchanged trainer, checkpoint and command line."""

import dataclasses
import json

import numpy as np
import pytest
from array_api_compat import array_namespace

from portable_cnn import Config, UserError, checkpoint, train
from portable_cnn.backends import to_host
from portable_cnn.cli import main
from portable_cnn.model import NUM_CLASSES, ConvNet, network

from .conftest import backend_or_skip

SMALL = Config(epochs=2, train_size=256, test_size=300, quiet=True)


@network
@dataclasses.dataclass
class BiasedNet(ConvNet):
    """ConvNet with a bias per class after the dense layer: one more parameter, at the dense layer's rate."""

    name = "biased"

    @classmethod
    def initial(cls, config, uniform):
        net = super().initial(config, uniform)
        return cls({**net.params, "bias": uniform((NUM_CLASSES,), config.weight_init)}, net.kernel_size, net.positions)

    @classmethod
    def shapes(cls, description):
        return {**super().shapes(description), "bias": (NUM_CLASSES,)}

    def learning_rates(self, config):
        return {**super().learning_rates(config), "bias": config.alpha}

    def dense(self, hidden):
        return super().dense(hidden) + self.params["bias"]

    def scores(self, maps):
        return super().scores(maps) + self.params["bias"]

    def backward(self, cache, probabilities, targets, divisor=1):
        xp = array_namespace(probabilities)
        bias = xp.sum((probabilities - targets) / divisor, axis=0)
        return {**super().backward(cache, probabilities, targets, divisor), "bias": bias}


@pytest.mark.parametrize("library", ["numpy", "jax"])
def test_a_new_network_trains_checkpoints_resumes_and_evaluates(mnist, tmp_path, capsys, library):
    """On numpy and under jax.jit (its parameters one pytree of three arrays)."""
    backend_or_skip(library)
    config = dataclasses.replace(SMALL, backend=library, dtype="float64")
    first_bias = to_host(train(dataclasses.replace(config, epochs=0), mnist, network=BiasedNet).model.params["bias"])
    straight = train(config, mnist, network=BiasedNet)
    assert isinstance(straight.model, BiasedNet)
    assert not np.array_equal(to_host(straight.model.params["bias"]), first_bias)  # the bias was trained
    assert straight.history[-1].test_acc > 0.5

    path = str(tmp_path / "biased.npz")
    train(dataclasses.replace(config, epochs=1, save=path), mnist, network=BiasedNet)
    saved = checkpoint.load(path)
    assert set(saved.params) == {"kernels", "weights", "bias"} and saved.model["network"] == "biased"
    resumed = train(dataclasses.replace(config, resume=path, save=path), mnist, network=BiasedNet)
    assert [r.line() for r in resumed.history] == [r.line() for r in straight.history]
    for name, array in straight.model.params.items():
        np.testing.assert_allclose(to_host(resumed.model.params[name]), to_host(array), rtol=0, atol=1e-10)

    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", path, "--test-size", "300", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] == resumed.history[-1].test_acc


def test_a_checkpoint_of_one_network_does_not_resume_as_another(mnist, tmp_path):
    path = str(tmp_path / "biased.npz")
    train(dataclasses.replace(SMALL, epochs=1, save=path), mnist, network=BiasedNet)
    with pytest.raises(UserError, match="holds a 'biased' network, not 'convnet'"):
        train(dataclasses.replace(SMALL, resume=path), mnist)


def test_a_checkpoint_of_an_unknown_network_is_one_line(mnist, tmp_path):
    train(dataclasses.replace(SMALL, epochs=0, save=str(tmp_path / "model.npz")), mnist)
    good = checkpoint.load(tmp_path / "model.npz")
    meta = dict(good.meta, model={**good.meta["model"], "network": "mystery"})
    np.savez(tmp_path / "mystery.npz", **good.params, metadata=np.frombuffer(json.dumps(meta).encode(), np.uint8))
    with pytest.raises(UserError, match="holds a 'mystery' network; this portable-cnn knows: convnet") as error:
        checkpoint.load(tmp_path / "mystery.npz")
    assert "\n" not in str(error.value)
