"""Triton kernels of ``superconv2d``: implicit GEMM over the active block with a fused epilogue.

Layout is NCHW (contiguous). Every grid covers the active block only: output tiles for channels
``[:out_width]`` (forward, grad weight), ``[:in_width]`` (grad input); the few extra programs
along the channel axis only write the inactive channels (``accumulate`` or zeros), so each output
element is written once and nothing is computed for inactive channels.

- forward: ``out = accumulate + scale * act(conv)`` and, when the backward pass needs it, the raw
  ``conv`` of the active block (``conv_out``, ``[N, out_width, H', W']``);
- backward: one elementwise pass gives ``grad_conv = scale * grad * act'(conv)`` with the per-plane
  sums for the bias and scale gradients, then an implicit-GEMM kernel for the input gradient and a
  split-K implicit-GEMM kernel for the weight gradient (depthwise: direct kernels).

Argument checking is done by the caller (the C++ checks, ``trilevelnas::superconv2d_check``, that
the kernel of ``trilevelnas::superconv2d_triton`` runs first: trilevelnas/ops/_library.py). The kernels
take float32 / float16 / bfloat16 and accumulate in float32; float32 products use TF32 when
``torch.backends.cudnn.allow_tf32`` is set (as cuDNN convolutions do). On CPU tensors they run only
under ``TRITON_INTERPRET=1``.
"""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from ..superconv import conv_out_format

_INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"


@triton.jit
def _activate(v, ACT: tl.constexpr, slope):
    if ACT == 1:
        v = tl.where(v > 0, v, 0.0)
    elif ACT == 2:
        v = tl.where(v > 0, v, v * slope)
    return v


@triton.jit
def _activate_grad(v, ACT: tl.constexpr, slope):
    if ACT == 1:
        d = tl.where(v > 0, 1.0, 0.0)
    elif ACT == 2:
        d = tl.where(v > 0, 1.0, slope)
    else:
        d = tl.full(v.shape, 1.0, tl.float32)
    return d


@triton.jit
def _store_epilogue(conv, out_idx, z_idx, mask, z_ptr, out_ptr, acc_ptr, scale_ptr, scale_factor,
                    slope, ACT: tl.constexpr, HAS_SCALE: tl.constexpr, HAS_ACC: tl.constexpr,
                    STORE_Z: tl.constexpr):
    if STORE_Z:
        tl.store(z_ptr + z_idx, conv.to(z_ptr.dtype.element_ty), mask=mask)
    s = scale_factor
    if HAS_SCALE:
        s = s * tl.load(scale_ptr).to(tl.float32)
    y = _activate(conv, ACT, slope) * s
    if HAS_ACC:
        y += tl.load(acc_ptr + out_idx, mask=mask, other=0.0).to(tl.float32)
    tl.store(out_ptr + out_idx, y.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _taps(k0, k_total, KH: tl.constexpr, KW: tl.constexpr, BLOCK_K: tl.constexpr):
    """One K block of (channel, tap) pairs: offsets, mask, channel, tap, kernel row and column."""
    offs_k = k0 + tl.arange(0, BLOCK_K)
    r = offs_k % (KH * KW)
    return offs_k, offs_k < k_total, offs_k // (KH * KW), r, r // KW, r % KW


@triton.jit
def _store_inactive(out_ptr, acc_ptr, idx, mask, HAS_ACC: tl.constexpr):
    """The output's inactive channels: ``accumulate``, or zeros without one."""
    if HAS_ACC:
        v = tl.load(acc_ptr + idx, mask=mask, other=0.0)
    else:
        v = tl.zeros(idx.shape, dtype=tl.float32)
    tl.store(out_ptr + idx, v.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _channel_tile(pid_n, n_active, width, channels, BLOCK_N: tl.constexpr):
    """The channels of column tile ``pid_n`` and their mask: tiles ``[0, n_active)`` cover the
    active channels ``[:width]``, the others the inactive ``[width:channels]``."""
    if pid_n < n_active:
        base = pid_n * BLOCK_N
        limit = width
    else:
        base = width + (pid_n - n_active) * BLOCK_N
        limit = channels
    offs = base + tl.arange(0, BLOCK_N)
    return offs, offs < limit


@triton.jit
def _gemm_tile(N, H, W, C, width, n_active, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """This program's tile of an implicit GEMM whose rows are the pixels of an [N, C, H, W] tensor
    and whose columns its channels (``_channel_tile``): the rows' mask, image, flat pixel, row and
    column; the channels and their mask; the tile's mask and the NCHW indices of its elements."""
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    hw = H * W
    m_mask = offs_m < N * hw
    n_idx = offs_m // hw
    pix = offs_m % hw
    offs_n, n_mask = _channel_tile(tl.program_id(1), n_active, width, C, BLOCK_N)
    idx = (n_idx[:, None] * C + offs_n[None, :]) * hw + pix[:, None]
    return m_mask, n_idx, pix, pix // W, pix % W, offs_n, n_mask, m_mask[:, None] & n_mask[None, :], idx


@triton.jit
def _conv_fwd_kernel(x_ptr, w_ptr, b_ptr, z_ptr, out_ptr, acc_ptr, scale_ptr, scale_factor, slope,
                     N, C_in, H, W, C_out, OH, OW, in_width, out_width, stride, padding, n_active,
                     KH: tl.constexpr, KW: tl.constexpr, ACT: tl.constexpr,
                     HAS_BIAS: tl.constexpr, HAS_SCALE: tl.constexpr, HAS_ACC: tl.constexpr,
                     STORE_Z: tl.constexpr, PRECISION: tl.constexpr,
                     BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    # GEMM view: rows = output pixels (n, oh, ow), columns = output channels, K = (ci, kh, kw).
    ohw = OH * OW
    m_mask, n_idx, pix, oh, ow, offs_n, n_mask, mask, out_idx = _gemm_tile(
        N, OH, OW, C_out, out_width, n_active, BLOCK_M, BLOCK_N)
    if tl.program_id(1) < n_active:
        k_total = in_width * KH * KW
        w_row = C_in * KH * KW
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for k0 in range(0, k_total, BLOCK_K):
            offs_k, k_mask, ci, r, kh, kw = _taps(k0, k_total, KH, KW, BLOCK_K)
            ih = oh[:, None] * stride - padding + kh[None, :]
            iw = ow[:, None] * stride - padding + kw[None, :]
            a_mask = (m_mask[:, None] & k_mask[None, :] & (ih >= 0) & (ih < H) & (iw >= 0)
                      & (iw < W))
            a = tl.load(x_ptr + ((n_idx[:, None] * C_in + ci[None, :]) * H + ih) * W + iw,
                        mask=a_mask, other=0.0)
            b = tl.load(w_ptr + offs_n[None, :] * w_row + offs_k[:, None],
                        mask=k_mask[:, None] & n_mask[None, :], other=0.0)
            acc = tl.dot(a, b, acc, input_precision=PRECISION)
        if HAS_BIAS:
            acc += tl.load(b_ptr + offs_n, mask=n_mask, other=0.0).to(tl.float32)[None, :]
        z_idx = (n_idx[:, None] * out_width + offs_n[None, :]) * ohw + pix[:, None]
        _store_epilogue(acc, out_idx, z_idx, mask, z_ptr, out_ptr, acc_ptr, scale_ptr,
                        scale_factor, slope, ACT, HAS_SCALE, HAS_ACC, STORE_Z)
    else:
        _store_inactive(out_ptr, acc_ptr, out_idx, mask, HAS_ACC)


@triton.jit
def _plane_tile(C, H, W, BLOCK: tl.constexpr):
    """This program's block of one plane (n, c) of an [N, C, H, W] tensor (program axis 1 runs
    over the N * C planes): n, c, the flat pixels, their mask, row and column, and their indices."""
    plane = tl.program_id(1)
    hw = H * W
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    return plane // C, plane % C, offs, offs < hw, offs // W, offs % W, plane * hw + offs


@triton.jit
def _dw_fwd_kernel(x_ptr, w_ptr, b_ptr, z_ptr, out_ptr, acc_ptr, scale_ptr, scale_factor, slope,
                   C, H, W, OH, OW, width, stride, padding,
                   KH: tl.constexpr, KW: tl.constexpr, ACT: tl.constexpr,
                   HAS_BIAS: tl.constexpr, HAS_SCALE: tl.constexpr, HAS_ACC: tl.constexpr,
                   STORE_Z: tl.constexpr, BLOCK: tl.constexpr):
    ohw = OH * OW
    n, c, offs, mask, oh, ow, out_idx = _plane_tile(C, OH, OW, BLOCK)
    if c < width:
        acc = tl.zeros((BLOCK,), dtype=tl.float32)
        for kh in tl.static_range(KH):
            for kw in tl.static_range(KW):
                ih = oh * stride - padding + kh
                iw = ow * stride - padding + kw
                valid = mask & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
                xv = tl.load(x_ptr + ((n * C + c) * H + ih) * W + iw, mask=valid, other=0.0)
                wv = tl.load(w_ptr + c * KH * KW + kh * KW + kw)
                acc += xv.to(tl.float32) * wv.to(tl.float32)
        if HAS_BIAS:
            acc += tl.load(b_ptr + c).to(tl.float32)
        z_idx = (n * width + c) * ohw + offs
        _store_epilogue(acc, out_idx, z_idx, mask, z_ptr, out_ptr, acc_ptr, scale_ptr,
                        scale_factor, slope, ACT, HAS_SCALE, HAS_ACC, STORE_Z)
    else:
        _store_inactive(out_ptr, acc_ptr, out_idx, mask, HAS_ACC)


@triton.jit
def _epilogue_bwd_kernel(g_ptr, z_ptr, gz_ptr, part_bias_ptr, part_scale_ptr, scale_ptr,
                         scale_factor, slope, C_out, width, ohw,
                         ACT: tl.constexpr, HAS_SCALE: tl.constexpr, NEED_Z: tl.constexpr,
                         BLOCK: tl.constexpr):
    # One program per active plane (n, c): grad_conv = s * g * act'(z), plus the plane's sums of
    # grad_conv (bias gradient) and g * act(z) (scale gradient).
    plane = tl.program_id(0)
    n = plane // width
    c = plane % width
    s = scale_factor
    if HAS_SCALE:
        s = s * tl.load(scale_ptr).to(tl.float32)
    sum_b = tl.zeros((BLOCK,), dtype=tl.float32)
    sum_s = tl.zeros((BLOCK,), dtype=tl.float32)
    for p0 in range(0, ohw, BLOCK):
        offs = p0 + tl.arange(0, BLOCK)
        mask = offs < ohw
        g = tl.load(g_ptr + (n * C_out + c) * ohw + offs, mask=mask, other=0.0).to(tl.float32)
        if NEED_Z:
            v = tl.load(z_ptr + plane * ohw + offs, mask=mask, other=0.0).to(tl.float32)
            gz = g * s * _activate_grad(v, ACT, slope)
            sum_s += g * _activate(v, ACT, slope)
        else:
            gz = g * s
        tl.store(gz_ptr + plane * ohw + offs, gz.to(gz_ptr.dtype.element_ty), mask=mask)
        sum_b += gz
    tl.store(part_bias_ptr + plane, tl.sum(sum_b, axis=0))
    tl.store(part_scale_ptr + plane, tl.sum(sum_s, axis=0))


@triton.jit
def _conv_bwd_input_kernel(gz_ptr, w_ptr, gx_ptr, N, C_in, H, W, OH, OW, in_width, out_width,
                           stride, padding, n_active,
                           KH: tl.constexpr, KW: tl.constexpr, PRECISION: tl.constexpr,
                           BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    # GEMM view: rows = input pixels (n, ih, iw), columns = input channels, K = (co, kh, kw).
    m_mask, n_idx, pix, ih, iw, offs_n, n_mask, mask, idx = _gemm_tile(
        N, H, W, C_in, in_width, n_active, BLOCK_M, BLOCK_N)
    if tl.program_id(1) < n_active:
        k_total = out_width * KH * KW
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for k0 in range(0, k_total, BLOCK_K):
            _, k_mask, co, r, kh, kw = _taps(k0, k_total, KH, KW, BLOCK_K)
            th = ih[:, None] + padding - kh[None, :]
            tw = iw[:, None] + padding - kw[None, :]
            oh = th // stride
            ow = tw // stride
            valid = (m_mask[:, None] & k_mask[None, :] & (th >= 0) & (tw >= 0)
                     & (oh * stride == th) & (ow * stride == tw) & (oh < OH) & (ow < OW))
            a = tl.load(gz_ptr + ((n_idx[:, None] * out_width + co[None, :]) * OH + oh) * OW + ow,
                        mask=valid, other=0.0)
            b = tl.load(w_ptr + (co[:, None] * C_in + offs_n[None, :]) * (KH * KW) + r[:, None],
                        mask=k_mask[:, None] & n_mask[None, :], other=0.0)
            acc = tl.dot(a, b, acc, input_precision=PRECISION)
        tl.store(gx_ptr + idx, acc.to(gx_ptr.dtype.element_ty), mask=mask)
    else:
        tl.store(gx_ptr + idx, tl.zeros((BLOCK_M, BLOCK_N), dtype=gx_ptr.dtype.element_ty),
                 mask=mask)


@triton.jit
def _conv_bwd_weight_kernel(gz_ptr, x_ptr, part_ptr, N, C_in, H, W, OH, OW, in_width, out_width,
                            stride, padding, pix_per_split,
                            KH: tl.constexpr, KW: tl.constexpr, PRECISION: tl.constexpr,
                            BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    # GEMM view: rows = output channels, columns = (ci, kh, kw), K = output pixels, split into
    # chunks of pix_per_split (program axis 2); partial sums go to part [split, out_width, K_w].
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    pid_s = tl.program_id(2)
    ohw = OH * OW
    n_cols = in_width * KH * KW
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    m_mask = offs_m < out_width
    n_mask = offs_n < n_cols
    ci = offs_n // (KH * KW)
    r = offs_n % (KH * KW)
    kh = r // KW
    kw = r % KW
    total = N * ohw
    start = pid_s * pix_per_split
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for p0 in range(0, pix_per_split, BLOCK_K):
        offs_p = start + p0 + tl.arange(0, BLOCK_K)
        p_mask = (offs_p < total) & (p0 + tl.arange(0, BLOCK_K) < pix_per_split)
        n_idx = offs_p // ohw
        pix = offs_p % ohw
        oh = pix // OW
        ow = pix % OW
        a = tl.load(gz_ptr + (n_idx[None, :] * out_width + offs_m[:, None]) * ohw + pix[None, :],
                    mask=m_mask[:, None] & p_mask[None, :], other=0.0)
        ih = oh[:, None] * stride - padding + kh[None, :]
        iw = ow[:, None] * stride - padding + kw[None, :]
        b_mask = p_mask[:, None] & n_mask[None, :] & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
        b = tl.load(x_ptr + ((n_idx[:, None] * C_in + ci[None, :]) * H + ih) * W + iw,
                    mask=b_mask, other=0.0)
        acc = tl.dot(a, b, acc, input_precision=PRECISION)
    idx = (pid_s * out_width + offs_m[:, None]) * n_cols + offs_n[None, :]
    tl.store(part_ptr + idx, acc, mask=m_mask[:, None] & n_mask[None, :])


@triton.jit
def _dw_bwd_input_kernel(gz_ptr, w_ptr, gx_ptr, C, H, W, OH, OW, width, stride, padding,
                         KH: tl.constexpr, KW: tl.constexpr, BLOCK: tl.constexpr):
    n, c, offs, mask, ih, iw, idx = _plane_tile(C, H, W, BLOCK)
    acc = tl.zeros((BLOCK,), dtype=tl.float32)
    if c < width:
        for kh in tl.static_range(KH):
            for kw in tl.static_range(KW):
                th = ih + padding - kh
                tw = iw + padding - kw
                oh = th // stride
                ow = tw // stride
                valid = (mask & (th >= 0) & (tw >= 0) & (oh * stride == th) & (ow * stride == tw)
                         & (oh < OH) & (ow < OW))
                g = tl.load(gz_ptr + ((n * width + c) * OH + oh) * OW + ow, mask=valid, other=0.0)
                wv = tl.load(w_ptr + c * KH * KW + kh * KW + kw)
                acc += g.to(tl.float32) * wv.to(tl.float32)
    tl.store(gx_ptr + idx, acc.to(gx_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _dw_bwd_weight_kernel(gz_ptr, x_ptr, part_ptr, N, C, H, W, OH, OW, width, stride, padding,
                          batch_per_split,
                          KH: tl.constexpr, KW: tl.constexpr, TAPS: tl.constexpr,
                          BLOCK: tl.constexpr):
    # One program per (active channel, chunk of the batch): all taps at once, [BLOCK, TAPS].
    c = tl.program_id(0)
    pid_s = tl.program_id(1)
    ohw = OH * OW
    taps = tl.arange(0, TAPS)
    t_mask = taps < KH * KW
    kh = taps // KW
    kw = taps % KW
    acc = tl.zeros((BLOCK, TAPS), dtype=tl.float32)
    n0 = pid_s * batch_per_split
    for n in range(n0, n0 + batch_per_split):
        for p0 in range(0, ohw, BLOCK):
            offs = p0 + tl.arange(0, BLOCK)
            mask = (offs < ohw) & (tl.zeros((BLOCK,), dtype=tl.int32) + n < N)
            oh = offs // OW
            ow = offs % OW
            g = tl.load(gz_ptr + (n * width + c) * ohw + offs, mask=mask, other=0.0)
            ih = oh[:, None] * stride - padding + kh[None, :]
            iw = ow[:, None] * stride - padding + kw[None, :]
            valid = mask[:, None] & t_mask[None, :] & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
            xv = tl.load(x_ptr + ((n * C + c) * H + ih) * W + iw, mask=valid, other=0.0)
            acc += g.to(tl.float32)[:, None] * xv.to(tl.float32)
    tl.store(part_ptr + (pid_s * width + c) * (KH * KW) + taps, tl.sum(acc, axis=0), mask=t_mask)


def _check_device(x: torch.Tensor) -> None:
    if not x.is_cuda and not _INTERPRET:
        raise RuntimeError(
            "superconv2d (Triton): the kernels run on CUDA tensors, or on CPU tensors only with "
            "TRITON_INTERPRET=1 set before trilevelnas is imported; got a tensor on "
            f"{x.device}"
        )


def _precision(dtype: torch.dtype) -> str:
    if dtype == torch.float32 and not torch.backends.cudnn.allow_tf32:
        return "ieee"
    return "tf32"


def _pow2_block(n: int, lo: int, hi: int) -> int:
    return max(lo, min(hi, triton.next_power_of_2(max(int(n), 1))))


def _gemm_blocks(m: int, n: int):
    """Tile sizes (BLOCK_M, BLOCK_N, BLOCK_K) for an implicit GEMM with m rows, n columns."""
    if _INTERPRET:
        return 32, _pow2_block(n, 16, 32), 16
    return 64 if m >= 4096 else 32, _pow2_block(n, 16, 64), 32


def _n_sms(device: torch.device) -> int:
    if device.type != "cuda":
        return 4
    return torch.cuda.get_device_properties(device).multi_processor_count


def forward(*args):
    """``(out, conv_out)`` as the C++ op ``trilevelnas::superconv2d`` returns them: a saved
    ``conv_out`` in the layout of the C++ op and the fake kernel (``conv_out_format``)."""
    out, conv_out = _forward(*args)
    if conv_out.dim() == 4:
        conv_out = conv_out.contiguous(memory_format=conv_out_format(args[0], args[3]))
    return out, conv_out


def _forward(x, weight, bias, in_width, out_width, stride, padding, groups, activation,
             negative_slope, scale, scale_factor, accumulate):
    _check_device(x)
    x = x.contiguous()
    weight = weight.contiguous()
    n, c_in, h, w = x.shape
    c_out, _, kh, kw = weight.shape
    oh = (h + 2 * padding - kh) // stride + 1
    ow = (w + 2 * padding - kw) // stride + 1
    store_z = activation != 0 or scale is not None
    out = torch.empty((n, c_out, oh, ow), dtype=x.dtype, device=x.device)
    z = (torch.empty((n, out_width, oh, ow), dtype=x.dtype, device=x.device) if store_z
         else x.new_empty((0,)))
    acc = accumulate.contiguous() if accumulate is not None else None
    dummy = out
    common = dict(
        ACT=activation, HAS_BIAS=bias is not None, HAS_SCALE=scale is not None,
        HAS_ACC=acc is not None, STORE_Z=store_z, KH=kh, KW=kw,
    )
    ptrs = (
        x, weight, bias.contiguous() if bias is not None else dummy, z if store_z else dummy, out,
        acc if acc is not None else dummy, scale if scale is not None else dummy,
        float(scale_factor), float(negative_slope),
    )
    if n * oh * ow == 0:
        return out, z
    if groups == 1:
        bm, bn, bk = _gemm_blocks(n * oh * ow, out_width)
        n_active = triton.cdiv(out_width, bn)
        grid = (triton.cdiv(n * oh * ow, bm), n_active + triton.cdiv(c_out - out_width, bn))
        _conv_fwd_kernel[grid](
            *ptrs, n, c_in, h, w, c_out, oh, ow, in_width, out_width, stride, padding, n_active,
            PRECISION=_precision(x.dtype), BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, **common)
    else:
        block = _pow2_block(oh * ow, 16, 64 if _INTERPRET else 1024)
        grid = (triton.cdiv(oh * ow, block), n * c_out)
        _dw_fwd_kernel[grid](*ptrs, c_out, h, w, oh, ow, out_width, stride, padding,
                             BLOCK=block, **common)
    return out, z


def backward(grad, x, weight, conv_out, in_width, out_width, stride, padding, groups, activation,
             negative_slope, scale, scale_factor, output_mask):
    """``(grad_x, grad_weight, grad_bias, grad_scale)`` as ``superconv2d_backward`` returns them."""
    _check_device(x)
    grad = grad.contiguous()
    x = x.contiguous()
    weight = weight.contiguous()
    n, c_in, h, w = x.shape
    c_out, _, kh, kw = weight.shape
    oh, ow = grad.shape[2], grad.shape[3]
    want_x, want_w, want_b, want_s = output_mask
    want_s = want_s and scale is not None
    need_z = activation != 0 or scale is not None
    planes = n * out_width
    gz = torch.empty((n, out_width, oh, ow), dtype=x.dtype, device=x.device)
    part_b = torch.zeros((planes,), dtype=torch.float32, device=x.device)
    part_s = torch.zeros((planes,), dtype=torch.float32, device=x.device)
    if planes > 0 and oh * ow > 0:
        _epilogue_bwd_kernel[(planes,)](
            grad, conv_out.contiguous() if need_z else grad, gz, part_b, part_s,
            scale if scale is not None else grad, float(scale_factor), float(negative_slope),
            c_out, out_width, oh * ow, ACT=activation, HAS_SCALE=scale is not None,
            NEED_Z=need_z, BLOCK=_pow2_block(oh * ow, 16, 64 if _INTERPRET else 1024))
    gx = gw = gb = gs = None
    taps = kh * kw
    if want_x:
        gx = torch.empty_like(x)
        if gx.numel() > 0:
            if groups == 1:
                bm, bn, bk = _gemm_blocks(n * h * w, in_width)
                n_active = triton.cdiv(in_width, bn)
                grid = (triton.cdiv(n * h * w, bm), n_active + triton.cdiv(c_in - in_width, bn))
                _conv_bwd_input_kernel[grid](
                    gz, weight, gx, n, c_in, h, w, oh, ow, in_width, out_width, stride, padding,
                    n_active, KH=kh, KW=kw, PRECISION=_precision(x.dtype),
                    BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk)
            else:
                block = _pow2_block(h * w, 16, 64 if _INTERPRET else 1024)
                _dw_bwd_input_kernel[(triton.cdiv(h * w, block), n * c_in)](
                    gz, weight, gx, c_in, h, w, oh, ow, out_width, stride, padding,
                    KH=kh, KW=kw, BLOCK=block)
    if want_w:
        gw = torch.zeros_like(weight)
        total = n * oh * ow
        if groups == 1:
            n_cols = in_width * taps
            bm, bn, bk = _gemm_blocks(out_width, n_cols)
            bm = _pow2_block(out_width, 16, 64)
            tiles = triton.cdiv(out_width, bm) * triton.cdiv(n_cols, bn)
            split = max(1, min(triton.cdiv(total, 4 * bk), (2 * _n_sms(x.device)) // tiles))
            per_split = triton.cdiv(triton.cdiv(total, split), bk) * bk
            split = max(1, triton.cdiv(total, per_split))
            part = torch.empty((split, out_width, n_cols), dtype=torch.float32, device=x.device)
            if total > 0:
                _conv_bwd_weight_kernel[(triton.cdiv(out_width, bm), triton.cdiv(n_cols, bn), split)](
                    gz, x, part, n, c_in, h, w, oh, ow, in_width, out_width, stride, padding,
                    per_split, KH=kh, KW=kw, PRECISION=_precision(x.dtype),
                    BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk)
                gw[:out_width, :in_width] = part.sum(0).view(out_width, in_width, kh, kw)
        else:
            split = max(1, min(n, (4 * _n_sms(x.device)) // max(out_width, 1)))
            per_split = triton.cdiv(n, split) if n > 0 else 1
            split = max(1, triton.cdiv(n, per_split)) if n > 0 else 1
            part = torch.zeros((split, out_width, taps), dtype=torch.float32, device=x.device)
            if total > 0:
                _dw_bwd_weight_kernel[(out_width, split)](
                    gz, x, part, n, c_in, h, w, oh, ow, out_width, stride, padding, per_split,
                    KH=kh, KW=kw, TAPS=triton.next_power_of_2(taps),
                    BLOCK=_pow2_block(oh * ow, 16, 64 if _INTERPRET else 256))
            gw[:out_width] = part.sum(0).view(out_width, 1, kh, kw)
    if want_b:
        gb = torch.zeros((c_out,), dtype=x.dtype, device=x.device)
        gb[:out_width] = part_b.view(n, out_width).sum(0)
    if want_s:
        gs = (part_s.sum() * scale_factor).to(scale.dtype)
    return gx, gw, gb, gs
