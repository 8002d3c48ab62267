//! HTML building blocks of the report: escaping, tables, summary tiles, the page frame with its inline
//! stylesheet, and plain-text formatting of times. The page is one file with no scripts and no external
//! resources; its Content-Security-Policy forbids both, so a browser opening it fetches nothing.

/// Escapes text for HTML element content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A table; cells are HTML (escape text first).
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut out = String::from("<table><thead><tr>");
    for h in headers {
        out.push_str(&format!("<th>{}</th>", escape(h)));
    }
    out.push_str("</tr></thead><tbody>");
    for row in rows {
        out.push_str("<tr>");
        for cell in row {
            out.push_str(&format!("<td>{cell}</td>"));
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table>");
    out
}

/// A summary tile: a label over a value (both text).
pub fn tile(label: &str, value: &str) -> String {
    format!(
        "<div class=\"tile\"><div class=\"label\">{}</div><div class=\"value\">{}</div></div>",
        escape(label),
        escape(value)
    )
}

/// A chart: the SVG inline in a figure with a caption (text).
pub fn figure(svg: &str, caption: &str) -> String {
    format!("<figure>{svg}<figcaption>{}</figcaption></figure>", escape(caption))
}

/// A section with an id and a heading (text); the body is HTML.
pub fn section(id: &str, title: &str, body: &str) -> String {
    format!("<section id=\"{}\"><h2>{}</h2>{body}</section>\n", escape(id), escape(title))
}

const STYLE: &str = "
body { font-family: -apple-system, 'Segoe UI', Roboto, 'Helvetica Neue', Arial, sans-serif; margin: 0;
       background: #f4f5f7; color: #1d2330; }
header { background: #1d2330; color: #fff; padding: 18px 32px; }
header h1 { margin: 0; font-size: 24px; }
header p { margin: 4px 0 0; color: #c5cad6; font-size: 14px; }
main { max-width: 1080px; margin: 0 auto; padding: 8px 24px 40px; }
section { background: #fff; border-radius: 8px; padding: 8px 24px 18px; margin: 18px 0;
          box-shadow: 0 1px 3px rgba(0,0,0,0.08); }
h2 { font-size: 19px; border-bottom: 1px solid #e3e6ec; padding-bottom: 6px; }
p.status { font-size: 15px; }
.tiles { display: flex; flex-wrap: wrap; gap: 10px; margin: 10px 0; }
.tile { background: #f0f3f8; border-radius: 6px; padding: 8px 14px; min-width: 150px; }
.tile .label { font-size: 12px; color: #5a6275; text-transform: uppercase; letter-spacing: 0.04em; }
.tile .value { font-size: 20px; font-weight: 600; margin-top: 2px; }
figure { margin: 14px 0; }
figure svg { max-width: 100%; height: auto; }
figcaption { font-size: 13px; color: #5a6275; margin-top: 2px; }
table { border-collapse: collapse; font-size: 13px; margin: 10px 0; }
th, td { border: 1px solid #e3e6ec; padding: 4px 8px; text-align: right; vertical-align: top; }
th { background: #f0f3f8; }
td code { font-size: 11px; text-align: left; display: block; word-break: break-all; max-width: 520px; }
pre { background: #f6f8fa; border: 1px solid #e3e6ec; padding: 10px; font-size: 12px; overflow-x: auto; }
.note { color: #8a5a00; background: #fff6e0; border-left: 3px solid #e0a800; padding: 6px 10px; }
details summary { cursor: pointer; margin: 8px 0; color: #2a4f9a; }
footer { color: #5a6275; font-size: 12px; text-align: center; padding: 10px; }
";

/// The whole page: `title` (text) in the header with `subtitle` (text), `body` (HTML) below.
pub fn page(title: &str, subtitle: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{t}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n\
         <header><h1>{t}</h1><p>{s}</p></header>\n<main>\n{body}</main>\n\
         <footer>attnas {v}: one self-contained file, no scripts</footer>\n</body>\n</html>\n",
        t = escape(title),
        s = escape(subtitle),
        v = env!("CARGO_PKG_VERSION"),
    )
}

/// `YYYY-MM-DD HH:MM:SS UTC` of a Unix time (days to civil date: the proleptic Gregorian calendar).
pub fn format_utc(unix: f64) -> String {
    let secs = unix.floor() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + (month <= 2) as i64;
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// A duration in words: `42 s`, `3.5 min`, `2.1 h`, `4.0 days`.
pub fn format_duration(secs: f64) -> String {
    match secs {
        s if s < 90.0 => format!("{s:.0} s"),
        s if s < 5400.0 => format!("{:.1} min", s / 60.0),
        s if s < 172_800.0 => format!("{:.1} h", s / 3600.0),
        s => format!("{:.1} days", s / 86_400.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_and_dates() {
        assert_eq!(escape("a<b>&\"c'"), "a&lt;b&gt;&amp;&quot;c&#39;");
        assert_eq!(format_utc(0.0), "1970-01-01 00:00:00 UTC");
        assert_eq!(format_utc(951_782_400.0), "2000-02-29 00:00:00 UTC");
        assert_eq!(format_utc(1_700_000_000.7), "2023-11-14 22:13:20 UTC");
        assert_eq!((format_duration(42.0), format_duration(600.0)), ("42 s".to_string(), "10.0 min".to_string()));
    }

    #[test]
    fn the_page_has_no_script_and_forbids_fetches() {
        let p = page("t <x>", "sub", &section("s", "S", &table(&["a"], &[vec!["1".into()]])));
        assert!(p.starts_with("<!DOCTYPE html>") && p.contains("t &lt;x&gt;") && p.contains("<td>1</td>"));
        assert!(!p.to_lowercase().contains("<script") && p.contains("default-src 'none'"));
    }
}
