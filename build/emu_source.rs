// Source analysis for the SIMT emulator build (build/emu.rs), kept free of build-script dependencies
// so tests/emu_source.rs can include and test it: comment/string blanking, the one source rewrite
// (`extern __shared__`), and which kernels must run cooperatively.
//
// Cooperative vs independent: a kernel is "cooperative" when its body, or any function or macro it
// names (transitively, by identifier), mentions shared memory, a barrier or a warp intrinsic.
// Everything else is "independent threads" (KERNEL_INDEPENDENT_THREADS): the runtime may run its
// threads one after another. Matching by name over-approximates (an overload or a same-named local
// counts), which only costs speed; the runtime traps if an independent kernel reaches a barrier.

use std::collections::{HashMap, HashSet};
use std::fmt::Write;

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
        if last_words.contains(&"namespace") || head.ends_with("extern \" \"") || head.ends_with("extern") {
            outside.push_str(&rest[seg_start..=i]);
            i += 1;
            seg_start = i;
            continue;
        }
        let close = matching_brace(b, i)?;
        let body = &rest[i + 1..close];
        // the head holds the declarations since the previous definition (e.g. a namespace-scope
        // __shared__ array) as well as this definition's signature
        outside.push_str(head);
        outside.push('\n');
        match function_name(head) {
            Some(name) => bodies.entry(name).or_default().push(body.to_string()),
            None => outside.push_str(body),
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

/// A namespace-scope `extern __shared__ T name[];`: a thread_local pointer the glue sets before each
/// emulated thread runs.
pub struct ExternShared {
    pub ty: String,
    pub name: String,
}

/// Replaces every `extern __shared__ T name[];` (outside comments and strings) with a pointer into the
/// dynamic arena, keeping the line count. Returns the new text and the namespace-scope declarations.
pub fn rewrite_extern_shared(text: &str) -> Result<(String, Vec<ExternShared>), String> {
    let code = strip_comments_and_strings(text); // same length and line breaks as `text`
    let mut out = String::with_capacity(text.len());
    let mut globals = Vec::new();
    let mut depth = 0i32;
    let mut last = 0;
    let bytes = code.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'{' => depth += 1,
            b'}' => depth -= 1,
            b'e' if code[i..].starts_with("extern") && (i == 0 || !is_ident(bytes[i - 1])) => {
                let after = code[i + "extern".len()..].trim_start();
                if let Some(rest) = after.strip_prefix("__shared__") {
                    let start_decl = code.len() - rest.len();
                    let semi = code[start_decl..].find(';').ok_or("extern __shared__ without ';'")? + start_decl;
                    let (ty, name) = parse_unsized_array(&code[start_decl..semi])?;
                    let newlines = "\n".repeat(code[i..semi].matches('\n').count());
                    out.push_str(&text[last..i]);
                    if depth == 0 {
                        let _ = write!(out, "static thread_local {ty}* {name};{newlines}");
                        globals.push(ExternShared { ty, name });
                    } else {
                        let _ = write!(
                            out,
                            "{ty}* const {name} = reinterpret_cast<{ty}*>(::simt::dynamic_shared());{newlines}"
                        );
                    }
                    last = semi + 1;
                    i = semi + 1;
                    continue;
                }
            }
            _ => {}
        }
        i += 1;
    }
    out.push_str(&text[last..]);
    Ok((out, globals))
}

/// `__align__(16) float smem[]` -> ("float", "smem").
fn parse_unsized_array(decl: &str) -> Result<(String, String), String> {
    let d = decl.trim();
    let body = d
        .strip_suffix(']')
        .and_then(|s| s.trim_end().strip_suffix('['))
        .ok_or_else(|| format!("extern __shared__ '{d}' is not an unsized array `T name[]`"))?
        .trim_end();
    let split = body.rfind(|c: char| !(c.is_alphanumeric() || c == '_')).ok_or_else(|| format!("'{d}' has no type"))?;
    let name = body[split + 1..].to_string();
    let mut ty = body[..=split].to_string();
    for attr in ["__align__", "alignas", "__attribute__"] {
        while let Some(p) = ty.find(attr) {
            let open = ty[p..].find('(').map(|o| o + p).ok_or_else(|| format!("'{d}': {attr} without '('"))?;
            let mut level = 0;
            let mut end = open;
            for (j, c) in ty[open..].char_indices() {
                match c {
                    '(' => level += 1,
                    ')' => {
                        level -= 1;
                        if level == 0 {
                            end = open + j;
                            break;
                        }
                    }
                    _ => {}
                }
            }
            ty.replace_range(p..=end, "");
        }
    }
    let ty = ty.split_whitespace().collect::<Vec<_>>().join(" ");
    if ty.is_empty() || name.is_empty() {
        return Err(format!("extern __shared__ '{d}': cannot find the element type and name"));
    }
    Ok((ty, name))
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Comments and string/char literal contents replaced by spaces (line breaks kept), so offsets and line
/// numbers match the input.
pub fn strip_comments_and_strings(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = b.to_vec();
    let mut i = 0;
    let blank = |out: &mut Vec<u8>, from: usize, to: usize| {
        for c in &mut out[from..to] {
            if *c != b'\n' {
                *c = b' ';
            }
        }
    };
    while i < b.len() {
        if b[i] == b'/' && b.get(i + 1) == Some(&b'/') {
            let end = s[i..].find('\n').map_or(b.len(), |e| e + i);
            blank(&mut out, i, end);
            i = end;
        } else if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
            let end = s[i + 2..].find("*/").map_or(b.len(), |e| e + i + 4);
            blank(&mut out, i, end);
            i = end;
        } else if b[i] == b'"' || b[i] == b'\'' {
            let q = b[i];
            let mut j = i + 1;
            while j < b.len() && b[j] != q && b[j] != b'\n' {
                j += if b[j] == b'\\' { 2 } else { 1 };
            }
            let end = (j + 1).min(b.len());
            blank(&mut out, i + 1, end.saturating_sub(1).max(i + 1));
            i = end;
        } else {
            i += 1;
        }
    }
    // only ASCII bytes were replaced by ASCII spaces inside comments/strings; multi-byte characters
    // there become several spaces, which keeps byte offsets
    String::from_utf8(out).unwrap_or_default()
}
