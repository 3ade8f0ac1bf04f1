//! The house rules that keep the code easy to change, checked on the
//! source: which modules may import which, and that the docs name files
//! that exist.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::{collections::BTreeSet, fs, path::Path};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Every `.rs` file under `src/dir`, with its text.
fn sources(dir: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut stack = vec![root().join("src").join(dir)];
    while let Some(p) = stack.pop() {
        if p.is_dir() {
            for e in fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
        } else if p.extension().is_some_and(|e| e == "rs") {
            let text = fs::read_to_string(&p).unwrap();
            out.push((p.strip_prefix(root()).unwrap().display().to_string(), text));
        }
    }
    out
}

/// The top-level modules a file names through `crate::`, outside tests.
fn crate_imports(text: &str) -> BTreeSet<String> {
    let code = text.split("#[cfg(test)]").next().unwrap_or(text);
    let ident = |s: &str| -> String { s.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect() };
    let mut found = BTreeSet::new();
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + 7..];
        let Some(list) = rest.strip_prefix('{') else {
            found.insert(ident(rest));
            continue;
        };
        // `use crate::{a, b::{c, d}, e}`: the first name of each item at
        // the outer level.
        let (mut depth, mut at_item) = (1, true);
        for (j, ch) in list.char_indices() {
            match ch {
                '{' => depth += 1,
                '}' if depth == 1 => break,
                '}' => depth -= 1,
                ',' if depth == 1 => at_item = true,
                c if at_item && depth == 1 && !c.is_whitespace() => {
                    found.insert(ident(&list[j..]));
                    at_item = false;
                }
                _ => {}
            }
        }
    }
    found.remove("");
    found
}

#[test]
fn the_server_imports_no_service() {
    // server/ is the listener machinery: the services (proxy, admin, mock)
    // and the composition root import it, never the other way round, so
    // no import circle runs through it.
    for (file, text) in sources("server") {
        let imports = crate_imports(&text);
        for banned in ["proxy", "admin", "mock", "gateway", "analytics", "cache", "auth", "ratelimit"] {
            assert!(!imports.contains(banned), "{file} imports crate::{banned}");
        }
    }
}

#[test]
fn leaf_modules_stay_leaves() {
    // service/ may lean on the other leaves (and the error type), nothing else.
    for (dir, allowed) in [("service", &["error", "http", "util"][..]), ("util", &[][..]), ("http", &[][..])] {
        for (file, text) in sources(dir) {
            for name in crate_imports(&text) {
                assert!(name == dir || allowed.contains(&name.as_str()), "{file} imports crate::{name}");
            }
        }
    }
}

#[test]
fn analytics_reads_only_the_request_context() {
    // The record is built from the context it is handed; analytics never
    // reaches into the data path for anything else.
    for (file, text) in sources("analytics") {
        for name in crate_imports(&text) {
            assert!(["analytics", "config", "util", "proxy"].contains(&name.as_str()), "{file} imports crate::{name}");
        }
        for line in text.lines().filter(|l| l.contains("crate::proxy::")) {
            assert!(line.contains("proxy::ctx::"), "{file}: only proxy::ctx may be used: {line}");
        }
    }
}

#[test]
fn architecture_doc_names_files_that_exist() {
    for doc in ["docs/architecture.md", "src/lib.rs", "src/proxy/pipeline.rs"] {
        let text = fs::read_to_string(root().join(doc)).unwrap();
        let mut named = 0;
        for word in text.split(|c: char| c.is_whitespace() || "`()[],;:".contains(c)) {
            let word = word.trim_matches(|c: char| c == '.' || c == '*');
            let path_like = word.ends_with(".rs") || word.ends_with('/');
            if !path_like || word.contains("://") || word.starts_with('/') || word.len() < 3 {
                continue;
            }
            let under_src = root().join("src").join(word);
            let under_root = root().join(word);
            let under_proxy = root().join("src/proxy").join(word);
            assert!(
                under_src.exists() || under_root.exists() || under_proxy.exists(),
                "{doc} names `{word}`, which does not exist"
            );
            named += 1;
        }
        assert!(named > 5, "{doc} names too few files to be a map: {named}");
    }
}
