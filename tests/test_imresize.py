import numpy as np
import pytest
import torch
from PIL import Image

from model.imresize import imresize, resize_matrix
from tests.conftest import photo_tensor


@pytest.mark.parametrize("in_len,out_len,scale", [(100, 25, 0.25), (25, 100, 4), (37, 10, 0.25), (9, 27, 3)])
def test_resize_matrix_rows_are_normalised(in_len, out_len, scale):
    m = resize_matrix(in_len, out_len, scale, dtype=torch.float64)
    assert m.shape == (out_len, in_len)
    assert torch.allclose(m.sum(1), torch.ones(out_len, dtype=torch.float64))


def test_output_size_is_ceil_like_matlab():
    assert imresize(torch.rand(3, 101, 57), 0.25).shape == (3, 26, 15)
    assert imresize(torch.rand(2, 3, 10, 7), 4).shape == (2, 3, 40, 28)


def test_constant_image_stays_constant():
    out = imresize(torch.full((1, 33, 45), 0.37, dtype=torch.float64), 0.25)
    assert torch.allclose(out, torch.full_like(out, 0.37))


def test_interior_matches_pillows_antialiased_bicubic():
    # Pillow's BICUBIC is the same Keys kernel (a = -0.5), stretched when shrinking, but it normalises
    # weights at the border instead of mirroring. Away from the border both must agree.
    img = photo_tensor("astronaut", (128, 128)).double() / 255
    ours = imresize(img, 0.25)
    for c in range(3):
        pil = Image.fromarray(img[c].float().numpy(), mode="F").resize((32, 32), Image.Resampling.BICUBIC)
        theirs = torch.from_numpy(np.array(pil)).double()
        assert torch.allclose(ours[c, 3:-3, 3:-3], theirs[3:-3, 3:-3], atol=2e-4)


def test_rejects_integer_tensors():
    with pytest.raises(TypeError):
        imresize(torch.zeros(3, 8, 8, dtype=torch.uint8), 0.5)


def test_autocast_does_not_lower_precision():
    img = torch.rand(1, 3, 40, 40)
    ref = imresize(img, 0.25)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = imresize(img, 0.25)
    assert out.dtype == torch.float32
    assert torch.equal(out, ref)
