"""The MNIST model of the README learns a small synthetic problem with Adam."""
import numpy as np

import tinyflux as tf
from test_nn import mnist_model
from tinyflux import optim
from conftest import move_to


def synthetic_digits(rng, n, classes=10):
    """Each class is a fixed random 28x28 pattern; examples add Gaussian noise to it."""
    patterns = rng.uniform(0, 1, (classes, 1, 28, 28)).astype(np.float32)
    labels = rng.integers(0, classes, n)
    images = patterns[labels] + 0.3 * rng.standard_normal((n, 1, 28, 28)).astype(np.float32)
    return images.astype(np.float32), labels


def test_mnist_model_learns_synthetic_classes(xp):
    rng = np.random.default_rng(0)
    tf.seed(0)
    model = mnist_model()
    model = move_to(xp, model)
    images, labels = synthetic_digits(rng, 256)
    images, labels = xp.asarray(images), xp.asarray(labels)
    opt = optim.Adam(model.parameters(), lr=3e-3)

    def loss_on(batch):
        return tf.logit_cross_entropy(model(tf.Tensor(images[batch])), labels[batch])

    with tf.no_grad():
        initial = float(loss_on(slice(None)).data)
    step = tf.train.Step(model, tf.logit_cross_entropy, opt)
    for i in range(200):
        batch = slice((i % 8) * 32, (i % 8 + 1) * 32)
        step(images[batch], labels[batch])
    with tf.no_grad():
        final = float(loss_on(slice(None)).data)
        accuracy = float((tf.onecold(model(tf.Tensor(images))) == labels).mean())
    assert initial > 2.0  # about log(10) for an untrained model
    assert final < initial / 100, (initial, final)  # the stated factor: at least 100x lower
    assert accuracy == 1.0
