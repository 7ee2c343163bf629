//! Target paths, delegated role names and delegation path patterns.
//!
//! A target path is a relative, `/`-separated path that names a file under a repository's
//! `targets/` directory; a driver joins it to a directory or URL, so one that is empty,
//! absolute or climbs out (`..`) is refused wherever it appears. Delegation patterns follow
//! python-tuf: the pattern and the path must have the same number of `/`-separated segments,
//! and each segment matches shell-style (`*`, `?`, `[abc]`, `[!abc]`), so `*` never crosses a
//! `/`.

use sha2::Digest as _;

use super::error::Error;

/// Longest target path we accept.
pub const MAX_TARGET_PATH: usize = 1024;

/// Longest delegated role name we accept.
pub const MAX_ROLE_NAME: usize = 64;

/// Refuse a target path that is empty, absolute, climbs out, or is otherwise unusable as a
/// relative file name.
pub fn check_target_path(role: &str, path: &str) -> Result<(), Error> {
    let dubious = |reason| {
        Err(Error::DubiousTargetPath {
            role: role.into(),
            path: path.chars().take(200).collect(),
            reason,
        })
    };
    if path.is_empty() {
        return dubious("empty");
    }
    if path.len() > MAX_TARGET_PATH {
        return dubious("longer than 1024 bytes");
    }
    if path.starts_with('/') || path.starts_with('\\') {
        return dubious("absolute");
    }
    if path.contains('\\') {
        return dubious("contains a backslash");
    }
    if path.chars().any(char::is_control) {
        return dubious("contains a control character");
    }
    for segment in path.split('/') {
        match segment {
            "" => return dubious("contains an empty segment"),
            "." | ".." => return dubious("contains a . or .. segment"),
            _ => {}
        }
    }
    if path.len() >= 2 && path.as_bytes()[1] == b':' {
        return dubious("looks like a drive letter");
    }
    Ok(())
}

/// Refuse a delegated role name that cannot safely name a file (`NAME.json`).
pub fn check_role_name(role: &str, name: &str) -> Result<(), Error> {
    let ok = !name.is_empty()
        && name.len() <= MAX_ROLE_NAME
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(Error::BadRoleName {
            role: role.into(),
            name: name.chars().take(200).collect(),
        })
    }
}

/// Whether delegation pattern `pattern` covers target `path`.
pub fn pattern_matches(pattern: &str, path: &str) -> bool {
    let mut pattern_segments = pattern.split('/');
    let mut path_segments = path.split('/');
    loop {
        match (pattern_segments.next(), path_segments.next()) {
            (None, None) => return true,
            (Some(p), Some(s)) => {
                if !segment_matches(p.as_bytes(), s.as_bytes()) {
                    return false;
                }
            }
            _ => return false,
        }
    }
}

/// Whether `path`'s SHA-256 (hex) starts with one of `prefixes`.
pub fn hash_prefix_matches(prefixes: &[String], path: &str) -> bool {
    let digest = hex::encode(sha2::Sha256::digest(path.as_bytes()));
    prefixes.iter().any(|p| digest.starts_with(p.as_str()))
}

// Shell-style matching of one segment, iterative with single-star backtracking (linear in
// practice, never exponential).
fn segment_matches(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() {
            match pattern[p] {
                b'*' => {
                    star = Some((p, t));
                    p += 1;
                    continue;
                }
                b'?' => {
                    p += 1;
                    t += 1;
                    continue;
                }
                b'[' => {
                    if let Some((matched, next)) = class_matches(&pattern[p..], text[t]) {
                        if matched {
                            p += next;
                            t += 1;
                            continue;
                        }
                    } else if text[t] == b'[' {
                        // An unclosed `[` matches itself, as in fnmatch.
                        p += 1;
                        t += 1;
                        continue;
                    }
                }
                c if c == text[t] => {
                    p += 1;
                    t += 1;
                    continue;
                }
                _ => {}
            }
        }
        match star {
            Some((sp, st)) => {
                p = sp + 1;
                t = st + 1;
                star = Some((sp, st + 1));
            }
            None => return false,
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

// Match a `[...]` class at the start of `pattern`; returns (matched, class length), or None if
// the class is not closed.
fn class_matches(pattern: &[u8], c: u8) -> Option<(bool, usize)> {
    let mut i = 1;
    let negate = matches!(pattern.get(i), Some(b'!'));
    if negate {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    while i < pattern.len() {
        if pattern[i] == b']' && !first {
            return Some((matched != negate, i + 1));
        }
        first = false;
        if i + 2 < pattern.len() && pattern[i + 1] == b'-' && pattern[i + 2] != b']' {
            if pattern[i] <= c && c <= pattern[i + 2] {
                matched = true;
            }
            i += 3;
        } else {
            if pattern[i] == c {
                matched = true;
            }
            i += 1;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dubious_paths_are_refused() {
        for path in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a//b",
            "a/./b",
            "C:x",
            "a\\b",
        ] {
            assert!(check_target_path("targets", path).is_err(), "{path:?}");
        }
        for path in ["artifacts/system.img", "releases/stable/12.json", "a..b/c"] {
            check_target_path("targets", path).unwrap();
        }
    }

    #[test]
    fn patterns_follow_python_tuf() {
        assert!(pattern_matches("artifacts/*", "artifacts/system.img"));
        assert!(!pattern_matches("artifacts/*", "artifacts/sub/system.img"));
        assert!(!pattern_matches("*", "a/b"));
        assert!(pattern_matches("*/*.img", "x/y.img"));
        assert!(pattern_matches("file-?.txt", "file-1.txt"));
        assert!(!pattern_matches("file-?.txt", "file-12.txt"));
        assert!(pattern_matches("v[0-9].json", "v7.json"));
        assert!(!pattern_matches("v[!0-9].json", "v7.json"));
        assert!(pattern_matches("a*b*c", "aXXbYYbZc"));
        assert!(!pattern_matches("a*b*c", "aXXbYY"));
        assert!(pattern_matches("[", "["));
    }

    #[test]
    fn pathological_pattern_is_fast() {
        let pattern = "*a".repeat(200);
        let text = "a".repeat(1000) + "b";
        assert!(!pattern_matches(&pattern, &text));
    }

    #[test]
    fn hash_prefixes() {
        // sha256("artifacts/a") starts with this prefix.
        let digest = hex::encode(sha2::Sha256::digest(b"artifacts/a"));
        assert!(hash_prefix_matches(
            &[digest[..4].to_string()],
            "artifacts/a"
        ));
        assert!(!hash_prefix_matches(&["zz".to_string()], "artifacts/a"));
    }
}
