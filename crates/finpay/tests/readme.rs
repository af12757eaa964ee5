//! The README's table of chaos scenarios is checked against the scenarios' own specs: the name, the
//! fault, the bounds and what they are measured over come from `finpay::chaos`; only the last
//! column, the figures of a recorded run, is the README's own.

const README: &str = include_str!("../../../README.md");

#[test]
fn the_readme_lists_every_chaos_scenario_with_its_stated_bounds() {
    let rows = finpay::chaos::readme_table_rows();
    let mut missing = Vec::new();
    for row in &rows {
        let name_cell = row.split(" | ").next().unwrap_or_default();
        let found = README
            .lines()
            .find(|l| l.starts_with(&format!("{name_cell} |")));
        match found {
            Some(line) if line.starts_with(&format!("{row} ")) => {}
            Some(line) => missing.push(format!("want: {row} <measured> |\n got: {line}")),
            None => missing.push(format!("want: {row} <measured> |\n got: nothing")),
        }
    }
    assert!(
        missing.is_empty(),
        "README.md's chaos table differs from the scenarios:\n{}",
        missing.join("\n")
    );
}
