//! The README documents what the code has: every setting in the table of service settings
//! (`src/service/settings.rs`) is in the README's table of `add`/`edit` options, and the
//! README documents no setting option the table lacks. A new setting is one row in the
//! code and one line in the README; this test catches the second one missing.

use tend::service::settings::{Flag, ROWS};

/// The rows of the README's "Options of `add` and `edit`" table.
fn readme_option_rows() -> Vec<String> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("read README.md");
    let start = readme
        .find("Options of `add` and `edit`")
        .expect("the README has the options table");
    readme[start..]
        .lines()
        .skip_while(|l| !l.starts_with("| option"))
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .map(|l| l.split('|').nth(1).unwrap_or("").trim().to_string())
        .collect()
}

#[test]
fn every_setting_is_documented_and_nothing_else() {
    let rows = readme_option_rows();
    assert!(!rows.is_empty(), "no option rows found in the README");
    // Options of add/edit that are not settings of the table.
    let not_settings = ["--env", "--cmd", "--unset-env"];
    for r in ROWS {
        let documented = match r.flag {
            Flag::Option {
                long, value_name, ..
            } => rows.iter().any(|d| {
                d.contains(&format!("`--{long} ")) || d.contains(&format!("--{long} {value_name}"))
            }),
            Flag::Switch { long, negation } => rows
                .iter()
                .any(|d| d.contains(&format!("--{long}")) && d.contains(&format!("--{negation}"))),
        };
        assert!(
            documented,
            "{} is not in the README's options table",
            r.option
        );
    }
    for d in &rows {
        let names: Vec<&str> = d
            .split('`')
            .filter(|w| w.starts_with("--"))
            .map(|w| w.split_whitespace().next().unwrap_or(w))
            .collect();
        for n in names {
            let known = not_settings.contains(&n)
                || ROWS.iter().any(|r| match r.flag {
                    Flag::Option { long, .. } => n == format!("--{long}"),
                    Flag::Switch { long, negation } => {
                        n == format!("--{long}") || n == format!("--{negation}")
                    }
                });
            assert!(
                known,
                "the README documents {n}, which is not an option of add/edit"
            );
        }
    }
}
