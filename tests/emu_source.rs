//! The emulator build's source analysis (build/emu_source.rs, included here by path): the
//! `extern __shared__` rewrite keeps line numbers and handles attributes and scopes, comments and
//! strings are ignored, and the cooperative/independent classification follows calls and macros and
//! stays conservative where it cannot see.

#[path = "../build/emu_source.rs"]
#[allow(dead_code)]
mod source;

use source::{cooperative_kernels, rewrite_extern_shared, strip_comments_and_strings};

#[test]
fn extern_shared_becomes_a_pointer_into_the_arena_keeping_lines() {
    let src = "extern \"C\" __global__ void k(float* y) {\n    extern __shared__ __align__(16) float smem[];\n    y[0] = smem[0];\n}\n";
    let (out, globals) = rewrite_extern_shared(src).unwrap();
    assert!(globals.is_empty());
    assert!(out.contains("float* const smem = reinterpret_cast<float*>(::simt::dynamic_shared());"), "{out}");
    assert!(!out.contains("__align__"), "{out}");
    assert_eq!(out.lines().count(), src.lines().count());
}

#[test]
fn namespace_scope_extern_shared_is_a_thread_local_pointer() {
    let src = "extern __shared__ unsigned char\n    raw[];\n__global__ void k() { raw[0] = 1; }\n";
    let (out, globals) = rewrite_extern_shared(src).unwrap();
    assert_eq!(globals.len(), 1);
    assert_eq!((globals[0].ty.as_str(), globals[0].name.as_str()), ("unsigned char", "raw"));
    assert!(out.starts_with("static thread_local unsigned char* raw;"), "{out}");
    assert_eq!(out.lines().count(), src.lines().count(), "the declaration spanned two lines");
}

#[test]
fn extern_shared_in_comments_and_strings_is_left_alone() {
    let src = "// extern __shared__ float a[];\nconst char* s = \"extern __shared__ float b[];\";\n/* extern __shared__ float c[]; */\n";
    let (out, globals) = rewrite_extern_shared(src).unwrap();
    assert_eq!(out, src);
    assert!(globals.is_empty());
}

#[test]
fn sized_extern_shared_is_an_error_naming_it() {
    let e = rewrite_extern_shared("void k() { extern __shared__ float s[32]; }").err().unwrap();
    assert!(e.contains("float s[32]"), "{e}");
}

#[test]
fn blanking_keeps_offsets() {
    let src = "a /* { */ b // }\n\"{\" '}' c";
    let out = strip_comments_and_strings(src);
    assert_eq!(out.len(), src.len());
    assert!(!out.contains('{') && !out.contains('}'));
    assert_eq!(out.lines().count(), 2);
}

fn coop(code: &str, kernels: &[&str]) -> Vec<String> {
    let names: Vec<String> = kernels.iter().map(|s| s.to_string()).collect();
    let mut v: Vec<String> = cooperative_kernels(&strip_comments_and_strings(code), &names).into_iter().collect();
    v.sort();
    v
}

#[test]
fn classification_follows_calls_and_macros() {
    let code = r#"
#define LOOP(i, n) for (int i = 0; i < n; ++i)
#define SYNC() __syncthreads()
__device__ float warp_sum(float v) { return v + __shfl_xor_sync(0xffffffff, v, 1); }
__device__ float block_sum(float v) { return warp_sum(v); }
__device__ float plain(float v) { return v * 2.0f; }
extern "C" __global__ void elementwise(float* y) { LOOP(i, 4) y[i] = plain(y[i]); }
extern "C" __global__ void reduce(float* y) { y[0] = block_sum(y[0]); }
extern "C" __global__ void __launch_bounds__(256) via_macro(float* y) { SYNC(); }
extern "C" __global__ void tiled(float* y) { __shared__ float t[32]; t[0] = y[0]; }
// a comment naming __syncthreads does not count: __global__ void commented() {}
"#;
    let all = ["elementwise", "reduce", "via_macro", "tiled"];
    assert_eq!(coop(code, &all), vec!["reduce", "tiled", "via_macro"]);
}

#[test]
fn classification_is_conservative_where_it_cannot_see() {
    // a namespace-scope __shared__ array: every kernel of the file is cooperative
    assert_eq!(coop("__shared__ float g[4];\n__global__ void a(float* y) { y[0] = 1; }", &["a"]), vec!["a"]);
    // a kernel whose body was not found (declared through a macro) is cooperative
    assert_eq!(coop("#define K(name) __global__ void name() {}\nK(hidden)", &["hidden"]), vec!["hidden"]);
    // unbalanced braces: everything cooperative
    assert_eq!(coop("__global__ void a() { {", &["a"]), vec!["a"]);
    // kernels inside a namespace are still found; a struct with a shuffle makes the file cooperative
    assert_eq!(coop("namespace n { __global__ void a(float* y) { y[0] = 1; } }", &["a"]), Vec::<String>::new());
    let with_struct =
        "struct W { __device__ float f(float v) { return __shfl_sync(~0u, v, 0); } };\n__global__ void a() {}";
    assert_eq!(coop(with_struct, &["a"]), vec!["a"]);
}
