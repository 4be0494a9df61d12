//! Value transforms the converter applies to single tensors: Llama's rotary permutation, the
//! `1 + w` norms of Gemma 3 and the Qwen hybrids, the hybrids' `A = -exp(A_log)`, and Qwen3.5's
//! reordering of linear-attention value heads from grouped by key head to tiled
//! (`_LinearAttentionVReorderBase`: `[G0v0, G0v1, G1v0, G1v1]` → `[G0v0, G1v0, G0v1, G1v1]`, so
//! that ggml's broadcast over key heads lines up).

/// One transform of a tensor's values (rows of `cols`, row-major as Hugging Face stores them).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Transform {
    /// Llama's Q/K rows, from each head's halves to interleaved pairs, for `n_head` heads.
    Rotary(usize),
    AddOne,
    NegExp,
    /// Value-head reorder of the rows after the first `skip`, in heads of `head` rows.
    VRows {
        skip: usize,
        head: usize,
    },
    /// Value-head reorder of the columns, in heads of `head` columns.
    VCols {
        head: usize,
    },
}

/// Linear-attention value heads: `nk` key heads, `per_k` value heads per key head.
#[derive(Debug, Clone, Copy)]
pub struct VHeads {
    pub nk: usize,
    pub per_k: usize,
}

/// `values` (rows of `cols`) with `t` applied.
pub fn apply(
    t: Transform,
    values: Vec<f32>,
    cols: usize,
    v: Option<VHeads>,
) -> Result<Vec<f32>, String> {
    Ok(match t {
        Transform::Rotary(n_head) => rotary_permute(&values, cols, n_head)?,
        Transform::AddOne => values.into_iter().map(|x| x + 1.0).collect(),
        Transform::NegExp => values.into_iter().map(|x| -x.exp()).collect(),
        Transform::VRows { skip, head } => {
            let v = v.ok_or("no value heads")?;
            let mut out = values;
            let start = skip * cols;
            let region = &out[start..];
            if region.len() != v.nk * v.per_k * head * cols {
                return Err(format!(
                    "{} rows after the first {skip} are not {} value heads of {head}",
                    region.len() / cols.max(1),
                    v.nk * v.per_k
                ));
            }
            let reordered = tile_heads(region, v, head * cols);
            out.truncate(start);
            out.extend(reordered);
            out
        }
        Transform::VCols { head } => {
            let v = v.ok_or("no value heads")?;
            if cols != v.nk * v.per_k * head {
                return Err(format!(
                    "{cols} columns are not {} value heads of {head}",
                    v.nk * v.per_k
                ));
            }
            values
                .chunks_exact(cols)
                .flat_map(|row| tile_heads(row, v, head))
                .collect()
        }
    })
}

/// Heads of `size` values stored grouped by key head (`[k][j]`) rewritten tiled (`[j][k]`).
fn tile_heads(grouped: &[f32], v: VHeads, size: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(grouped.len());
    for j in 0..v.per_k {
        for k in 0..v.nk {
            let from = (k * v.per_k + j) * size;
            out.extend_from_slice(&grouped[from..from + size]);
        }
    }
    out
}

/// Llama's Q/K rows reordered from Hugging Face's rotary layout (each head's first half, then
/// second half) to ggml's (pairs interleaved), as `LlamaModel.permute` does.
fn rotary_permute(values: &[f32], cols: usize, n_head: usize) -> Result<Vec<f32>, String> {
    let rows = values.len() / cols.max(1);
    if n_head == 0 || !rows.is_multiple_of(2 * n_head) {
        return Err(format!(
            "{rows} rows cannot be split into {n_head} heads of pairs"
        ));
    }
    let half = rows / n_head / 2;
    let mut out = Vec::with_capacity(values.len());
    for h in 0..n_head {
        for i in 0..half {
            for j in 0..2 {
                let r = h * 2 * half + j * half + i;
                out.extend_from_slice(&values[r * cols..(r + 1) * cols]);
            }
        }
    }
    Ok(out)
}

/// Qwen3-Next's `in_proj_qkvz` (`[nk × (q dk, k dk, v per_k·dv, z per_k·dv)]` rows of `cols`)
/// regrouped as the converter does: `attn_qkv` (every q, every k, every v) and `attn_gate`
/// (every z).
pub fn split_qkvz(
    values: &[f32],
    cols: usize,
    v: VHeads,
    dk: usize,
    dv: usize,
) -> Result<(Vec<f32>, Vec<f32>), String> {
    let vz = v.per_k * dv;
    let group = 2 * dk + 2 * vz;
    if values.len() != v.nk * group * cols {
        return Err(format!(
            "{} rows are not {} key heads of q {dk}, k {dk}, v {vz}, z {vz}",
            values.len() / cols.max(1),
            v.nk
        ));
    }
    let rows = |g: usize, start: usize, n: usize| {
        let from = (g * group + start) * cols;
        &values[from..from + n * cols]
    };
    let mut qkv = Vec::with_capacity(v.nk * (2 * dk + vz) * cols);
    for (start, n) in [(0, dk), (dk, dk), (2 * dk, vz)] {
        (0..v.nk).for_each(|g| qkv.extend_from_slice(rows(g, start, n)));
    }
    let z = (0..v.nk)
        .flat_map(|g| rows(g, 2 * dk + vz, vz).iter().copied())
        .collect();
    Ok((qkv, z))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_heads_go_from_grouped_to_tiled() {
        let v = VHeads { nk: 2, per_k: 2 };
        // Rows: one skipped, then heads of one row each: G0v0, G0v1, G1v0, G1v1.
        let out = apply(
            Transform::VRows { skip: 1, head: 1 },
            vec![9.0, 0.0, 1.0, 2.0, 3.0],
            1,
            Some(v),
        );
        assert_eq!(out.unwrap(), [9.0, 0.0, 2.0, 1.0, 3.0]);
        let cols = apply(
            Transform::VCols { head: 1 },
            vec![0.0, 1.0, 2.0, 3.0],
            4,
            Some(v),
        );
        assert_eq!(cols.unwrap(), [0.0, 2.0, 1.0, 3.0]);
    }

    #[test]
    fn qkvz_regroups_per_kind() {
        // Two key heads, dk 1, one value head each of dv 1: rows q0 k0 v0 z0 q1 k1 v1 z1.
        let v = VHeads { nk: 2, per_k: 1 };
        let rows = [0.0, 1.0, 2.0, 3.0, 10.0, 11.0, 12.0, 13.0];
        let (qkv, z) = split_qkvz(&rows, 1, v, 1, 1).unwrap();
        assert_eq!(qkv, [0.0, 10.0, 1.0, 11.0, 2.0, 12.0]);
        assert_eq!(z, [3.0, 13.0]);
    }
}
