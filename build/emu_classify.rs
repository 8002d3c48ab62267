// Which kernels may run their threads one after another in the SIMT emulator (build/emu.rs): a kernel
// is "cooperative" when its body, or any function or macro it names (transitively, by identifier),
// mentions shared memory, a barrier or a warp intrinsic. Everything else is "independent threads"
// (KERNEL_INDEPENDENT_THREADS). Matching by name over-approximates (an overload or a same-named local
// counts), which only costs speed; the runtime traps if an independent kernel reaches a barrier.

use std::collections::{HashMap, HashSet};

/// Tokens that let the threads of a block cooperate.
pub const COOPERATIVE_TOKENS: &[&str] = &[
    "__shared__",
    "__syncthreads",
    "__syncwarp",
    "__shfl",
    "__ballot_sync",
    "__any_sync",
    "__all_sync",
    "__activemask",
    "__reduce_",
    "__match_",
];

fn has_token(s: &str) -> bool {
    COOPERATIVE_TOKENS.iter().any(|t| s.contains(t))
}

fn identifiers(s: &str) -> HashSet<&str> {
    s.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).filter(|w| !w.is_empty()).collect()
}

/// `code` is a flattened module with comments and strings blanked. Returns the set of kernel names
/// (among `kernels`) that must run cooperatively.
pub fn cooperative_kernels(code: &str, kernels: &[String]) -> HashSet<String> {
    let all = || kernels.iter().cloned().collect::<HashSet<_>>();
    let Some((bodies, outside)) = split_definitions(code) else { return all() };
    if has_token(&outside) {
        return all(); // e.g. a namespace-scope __shared__ array or a struct with a shuffle
    }
    // fixpoint: names whose body mentions a token or a cooperative name
    let mut coop: HashSet<&str> = HashSet::new();
    loop {
        let before = coop.len();
        for (name, body) in &bodies {
            if !coop.contains(name.as_str())
                && body.iter().any(|b| has_token(b) || identifiers(b).iter().any(|id| coop.contains(id)))
            {
                coop.insert(name.as_str());
            }
        }
        if coop.len() == before {
            break;
        }
    }
    kernels.iter().filter(|k| coop.contains(k.as_str()) || !bodies.contains_key(k.as_str())).cloned().collect()
}

/// Function bodies (by name; several for overloads) and macro bodies, plus the text outside both.
/// `None` when the braces do not balance (then every kernel counts as cooperative).
fn split_definitions(code: &str) -> Option<(HashMap<String, Vec<String>>, String)> {
    let mut bodies: HashMap<String, Vec<String>> = HashMap::new();
    let mut outside = String::new();
    // macros first: `#define NAME body` with continuation lines
    let mut rest = String::new();
    let mut lines = code.lines();
    while let Some(line) = lines.next() {
        let t = line.trim_start();
        if let Some(def) = t.strip_prefix("#define") {
            let mut text = def.to_string();
            let mut cur = line.to_string();
            while cur.trim_end().ends_with('\\') {
                cur = lines.next().unwrap_or("").to_string();
                text.push('\n');
                text.push_str(&cur);
            }
            let def = text.trim_start();
            let end = def.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(def.len());
            bodies.entry(def[..end].to_string()).or_default().push(def[end..].to_string());
            rest.push('\n');
        } else {
            rest.push_str(line);
            rest.push('\n');
        }
    }
    let b = rest.as_bytes();
    let mut i = 0;
    let mut seg_start = 0;
    while i < b.len() {
        if b[i] != b'{' {
            i += 1;
            continue;
        }
        let head = rest[seg_start..i].trim_end();
        // `namespace x {` and `extern "C" {` are transparent
        let last_words: Vec<&str> = head.rsplit(|c: char| c.is_whitespace()).take(2).collect();
        if last_words.iter().any(|w| *w == "namespace") || head.ends_with("extern \" \"") || head.ends_with("extern") {
            outside.push_str(&rest[seg_start..=i]);
            i += 1;
            seg_start = i;
            continue;
        }
        let close = matching_brace(b, i)?;
        let body = &rest[i + 1..close];
        match function_name(head) {
            Some(name) => bodies.entry(name).or_default().push(body.to_string()),
            None => {
                outside.push_str(head);
                outside.push_str(body);
            }
        }
        i = close + 1;
        seg_start = i;
    }
    outside.push_str(&rest[seg_start..]);
    Some((bodies, outside))
}

fn matching_brace(b: &[u8], open: usize) -> Option<usize> {
    let mut depth = 0usize;
    for (j, &c) in b.iter().enumerate().skip(open) {
        match c {
            b'{' => depth += 1,
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(j);
                }
            }
            _ => {}
        }
    }
    None
}

/// The function a definition head like `__device__ float f(int a, int b) const` names, if it is one.
fn function_name(head: &str) -> Option<String> {
    let mut h = head.trim_end();
    for q in ["const", "noexcept", "override"] {
        h = h.strip_suffix(q).map(str::trim_end).unwrap_or(h);
    }
    let h = h.strip_suffix(')')?;
    // the '(' that matches the final ')'
    let mut depth = 1i32;
    let mut open = None;
    for (j, c) in h.char_indices().rev() {
        match c {
            ')' => depth += 1,
            '(' => {
                depth -= 1;
                if depth == 0 {
                    open = Some(j);
                    break;
                }
            }
            _ => {}
        }
    }
    let before = h[..open?].trim_end();
    let start = before.rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).map_or(0, |p| p + 1);
    let name = &before[start..];
    (!name.is_empty() && !name.starts_with(|c: char| c.is_ascii_digit())).then(|| name.to_string())
}
