//! The generated kernel entry points (build/entry_points.rs, included here by path): one templated
//! body per op, an `extern "C"` wrapper per storage type, and clear errors for a malformed marker.

#[allow(dead_code)]
#[path = "../build/entry_points.rs"]
mod entry_points;

use entry_points::{parse_entry_templates, replace_word, wrappers_source};

const SWISH: &str = "
ENTRY_POINTS(f32, bf16)
template <typename T>
__device__ __forceinline__ void swish_fwd(T* __restrict__ y, const T* __restrict__ x, long long n) {
    body();
}
extern \"C\" __global__ void plain_f32(float* y) {}
";

#[test]
fn a_template_gets_one_wrapper_per_storage_type() {
    let t = parse_entry_templates(SWISH).unwrap();
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].name, "swish_fwd");
    assert_eq!(t[0].types, ["f32", "bf16"]);
    let w = wrappers_source(&t);
    assert!(
        w.contains("extern \"C\" __global__ void swish_fwd_f32(float* __restrict__ y, const float* __restrict__ x, long long n) { swish_fwd<float>(y, x, n); }"),
        "{w}"
    );
    assert!(
        w.contains("extern \"C\" __global__ void swish_fwd_bf16(bf16* __restrict__ y, const bf16* __restrict__ x, long long n) { swish_fwd<bf16>(y, x, n); }"),
        "{w}"
    );
    assert_eq!(w.matches("extern \"C\"").count(), 2);
}

#[test]
fn only_the_named_types_are_generated_and_fixed_types_stay() {
    let src =
        "ENTRY_POINTS(bf16)\ntemplate <typename T> __device__ void cast_to_f32(float* y, const T* x, long long n) {}";
    let w = wrappers_source(&parse_entry_templates(src).unwrap());
    assert!(w.contains("void cast_to_f32_bf16(float* y, const bf16* x, long long n)"), "{w}");
    assert!(!w.contains("cast_to_f32_f32"), "{w}");
}

#[test]
fn no_marker_means_no_generated_code_and_the_macro_definition_is_not_a_marker() {
    assert!(parse_entry_templates("#define ENTRY_POINTS(...)\n__device__ void f(float* x) {}").unwrap().is_empty());
    assert_eq!(wrappers_source(&[]), "");
}

#[test]
fn malformed_markers_are_errors_that_say_what_is_wrong() {
    let cases = [
        ("ENTRY_POINTS(f32)\n__device__ void f(float* x) {}", "template <typename T>"),
        ("ENTRY_POINTS(f16)\ntemplate <typename T> __device__ void f(T* x) {}", "f16"),
        ("ENTRY_POINTS()\ntemplate <typename T> __device__ void f(T* x) {}", "no storage type"),
        ("ENTRY_POINTS(f32)\ntemplate <typename T, int K> __device__ void f(T* x) {}", "exactly one parameter"),
        ("ENTRY_POINTS(f32)\ntemplate <typename T> __device__ void f(float* x) {}", "no parameter uses"),
        ("ENTRY_POINTS(f32)\ntemplate <typename T> __device__ int f(T* x) {}", "__device__ void"),
    ];
    for (src, want) in cases {
        let err = parse_entry_templates(src).unwrap_err();
        assert!(err.contains(want), "{src:?}: error {err:?} should mention {want:?}");
    }
}

#[test]
fn replace_word_replaces_whole_words_only() {
    assert_eq!(replace_word("const T* __restrict__", "T", "bf16"), "const bf16* __restrict__");
    assert_eq!(replace_word("Tx* T_ *T", "T", "float"), "Tx* T_ *float");
}
