//! Shared helpers of the bf16 differential tests: the one-ulp tolerance and bit views.
#![allow(dead_code)] // each test binary uses a subset

/// One bf16 unit in the last place at the larger magnitude of `a`, `b`: 2^(e - 7) for exponent e (the
/// smallest bf16 subnormal below the normal range).
pub fn bf16_ulp(a: f32, b: f32) -> f32 {
    let m = a.abs().max(b.abs());
    (f32::from_bits(m.to_bits() & 0x7f80_0000) / 128.0).max(f32::from_bits(1 << 16))
}

/// Asserts |got - want| <= abs + rel |want| + ulps * bf16_ulp element-wise, naming the first failure.
pub fn assert_within(what: &str, got: &[f32], want: &[f32], abs: f32, rel: f32, ulps: f32) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let tol = abs + rel * w.abs() + ulps * bf16_ulp(g, w);
        assert!((g - w).abs() <= tol, "{what}[{i}]: {g} vs {w} (tolerance {tol})");
    }
}

/// True when every value is a bf16 value (low 16 bits zero).
pub fn is_bf16(v: &[f32]) -> bool {
    v.iter().all(|x| x.to_bits() & 0xffff == 0)
}
