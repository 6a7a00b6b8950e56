//! The config loader's contract, shared by the config targets: `stitch::config::parse` returns,
//! never panics, and every refusal names a line of the text it was given.

pub fn check(text: &str) {
    let Err(errors) = stitch::config::parse(text) else {
        return;
    };
    assert!(!errors.is_empty(), "a refusal without a reason");
    // An error at the very end of a text that ends in a newline is on the line after the last.
    let last = text.lines().count() + 1;
    for e in &errors {
        assert!(
            (1..=last).contains(&e.line()),
            "refusal without a line of the text ({} lines): {e:?}",
            last - 1
        );
        assert!(!e.key.is_empty(), "refusal without a key: {e:?}");
        assert!(!e.message.is_empty(), "refusal without a reason: {e:?}");
    }
}
