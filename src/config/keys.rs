//! `sanitize_keys`, `sanitize_replacement` and `max_key_length`: set on a destination for
//! all its spools, or on a spool for its own keys (the spool's value wins).

use super::reader::{Problems, Section};
use crate::key::{check_replacement, KeyRules, MAX_KEY_BYTES};

/// What one table says; `None` leaves a rule to the destination (or its default).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyRulesSetting {
    strict: Option<bool>,
    replacement: Option<String>,
    max_chars: Option<usize>,
}

impl KeyRulesSetting {
    /// The rules of a spool with this setting, delivering to a destination with `below`.
    pub fn over(&self, below: &KeyRulesSetting) -> KeyRules {
        let strict = self.strict.or(below.strict).unwrap_or(false);
        let replacement = self
            .replacement
            .clone()
            .or_else(|| below.replacement.clone())
            .unwrap_or_else(|| "_".to_string());
        KeyRules {
            replace_unsafe: strict.then_some(replacement),
            max_chars: self.max_chars.or(below.max_chars),
        }
    }
}

impl KeyRulesSetting {
    /// This setting, with what it leaves unsaid taken from `fallback` (a route's rules
    /// over its spool's).
    pub fn or(&self, fallback: &KeyRulesSetting) -> KeyRulesSetting {
        KeyRulesSetting {
            strict: self.strict.or(fallback.strict),
            replacement: self
                .replacement
                .clone()
                .or_else(|| fallback.replacement.clone()),
            max_chars: self.max_chars.or(fallback.max_chars),
        }
    }
}

pub fn parse(p: &mut Problems, s: &mut Section) -> KeyRulesSetting {
    let strict = match s.string(p, "sanitize_keys") {
        None => None,
        Some("strict") => Some(true),
        Some("off") => Some(false),
        Some(other) => {
            p.add(
                s.key("sanitize_keys"),
                format!("{other:?} is not one of \"strict\" (only [A-Za-z0-9/._-] from file names and paths) or \"off\""),
            );
            None
        }
    };
    let replacement = s.string(p, "sanitize_replacement").and_then(|text| {
        check_replacement(text)
            .map_err(|e| p.add(s.key("sanitize_replacement"), e))
            .ok()
            .map(|()| text.to_string())
    });
    let max_chars = s.integer(p, "max_key_length").and_then(|n| {
        if (16..=MAX_KEY_BYTES as i64).contains(&n) {
            Some(n as usize)
        } else {
            p.add(
                s.key("max_key_length"),
                format!("{n} is not between 16 and {MAX_KEY_BYTES} characters"),
            );
            None
        }
    });
    KeyRulesSetting {
        strict,
        replacement,
        max_chars,
    }
}

#[cfg(test)]
mod tests {
    use crate::config::tests::*;
    use crate::key::KeyRules;

    fn rules_of(text: &str) -> KeyRules {
        parse(text).unwrap().spools["orders"]
            .only_route()
            .key
            .rules()
            .clone()
    }

    #[test]
    fn a_destination_sets_the_rules_for_its_spools_and_a_spool_may_say_otherwise() {
        let on_destination = BASE_DEST.replace(
            "bucket = \"s3://acme-drop/inbound\"",
            "bucket = \"s3://acme-drop/inbound\"\nsanitize_keys = \"strict\"\nmax_key_length = 500",
        );
        let spool = format!("{BASE_SPOOL}key = \"{{spool}}/{{name}}-{{id}}\"\n");
        assert_eq!(
            rules_of(&format!("{on_destination}{spool}")),
            KeyRules {
                replace_unsafe: Some("_".into()),
                max_chars: Some(500),
            }
        );
        assert_eq!(
            rules_of(&format!(
                "{on_destination}{spool}sanitize_keys = \"off\"\nsanitize_replacement = \"-\"\n"
            )),
            KeyRules {
                replace_unsafe: None,
                max_chars: Some(500),
            }
        );
        assert_eq!(
            rules_of(&with_spool(
                "sanitize_keys = \"strict\"\nsanitize_replacement = \"x\"\n"
            )),
            KeyRules {
                replace_unsafe: Some("x".into()),
                max_chars: None,
            },
            "the default template has {{id}}"
        );
    }

    #[test]
    fn bad_values_are_refused_by_key() {
        refused(
            &with_spool("sanitize_keys = \"loose\""),
            "spools.orders.sanitize_keys",
            "\"strict\"",
        );
        refused(
            &with_spool("sanitize_replacement = \"/\""),
            "spools.orders.sanitize_replacement",
            "not allowed",
        );
        refused(
            &with_spool("max_key_length = 5000"),
            "spools.orders.max_key_length",
            "between 16 and 1024",
        );
        refused(
            &with_spool("sanitize_keys = \"strict\"\nkey = \"{spool}/{name}\""),
            "spools.orders.key",
            "{id} or {uuid}",
        );
    }
}
