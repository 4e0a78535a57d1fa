//! Numeric comparison of two tensors of the same shape: per-row cosine similarity and relative
//! L2 error. The FP16 accuracy guard judges engines with it; the converter's tests use it too.

/// Per-row cosine similarity and relative L2 error of `b` against the reference `a`, both
/// flattened with rows of `row_len` elements (`row_len` 0 = one row). Returns
/// `(min row cosine, ||a - b|| / ||a||)`. Rows where both are all zero count as cosine 1; a row
/// where exactly one is zero counts as 0. Any NaN gives NaN. Panics if the lengths differ.
pub fn cosine_and_rel_l2(a: &[f32], b: &[f32], row_len: usize) -> (f32, f32) {
    assert_eq!(a.len(), b.len(), "cosine_and_rel_l2: lengths differ");
    let row_len = if row_len == 0 {
        a.len().max(1)
    } else {
        row_len
    };
    let mut min_cos = 1.0f64;
    let (mut diff2, mut ref2) = (0.0f64, 0.0f64);
    for (ra, rb) in a.chunks(row_len).zip(b.chunks(row_len)) {
        let (mut dot, mut na, mut nb) = (0.0f64, 0.0f64, 0.0f64);
        for (&x, &y) in ra.iter().zip(rb) {
            let (x, y) = (x as f64, y as f64);
            dot += x * y;
            na += x * x;
            nb += y * y;
            diff2 += (x - y) * (x - y);
        }
        ref2 += na;
        let cos = if na == 0.0 && nb == 0.0 {
            1.0
        } else if na == 0.0 || nb == 0.0 {
            0.0
        } else {
            dot / (na.sqrt() * nb.sqrt())
        };
        if cos.is_nan() {
            min_cos = f64::NAN;
        } else if !min_cos.is_nan() {
            min_cos = min_cos.min(cos);
        }
    }
    let rel = if ref2 == 0.0 {
        if diff2 == 0.0 {
            0.0
        } else {
            f64::INFINITY
        }
    } else {
        (diff2 / ref2).sqrt()
    };
    (min_cos as f32, rel as f32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_and_rel_l2_basics() {
        let a = [1.0, 0.0, 0.0, 2.0];
        assert_eq!(cosine_and_rel_l2(&a, &a, 2), (1.0, 0.0));
        let (c, _) = cosine_and_rel_l2(&a, &[1.0, 0.0, 0.0, -2.0], 2);
        assert!((c + 1.0).abs() < 1e-6, "second row is opposite: {c}");
        let (c, rel) = cosine_and_rel_l2(&a, &[2.0, 0.0, 0.0, 4.0], 2);
        assert!((c - 1.0).abs() < 1e-6);
        assert!((rel - 1.0).abs() < 1e-6, "b = 2a: rel L2 1, got {rel}");
        assert_eq!(cosine_and_rel_l2(&[0.0; 2], &[0.0; 2], 0), (1.0, 0.0));
        assert_eq!(cosine_and_rel_l2(&[0.0, 1.0], &[0.0, 0.0], 1).0, 0.0);
        assert!(cosine_and_rel_l2(&[f32::NAN, 1.0], &[1.0, 1.0], 2)
            .0
            .is_nan());
    }
}
