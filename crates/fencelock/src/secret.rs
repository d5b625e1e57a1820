//! [`Secret`]: a string that never shows itself in `Debug` output.
//!
//! Passwords travel through option structs that derive `Debug` (the builder, the
//! store options) and could end up in logs, panics or a `{:?}` in an error report.
//! Wrapped in this type, every such print says `Secret(***)` instead, without a
//! hand-written `Debug` for every struct that carries one.

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

/// A cheaply cloned string whose `Debug` output is redacted.
///
/// It derefs to `str`, so code that needs the real text (a script argument, an `AUTH`
/// command) writes `&*secret` and everything else cannot print it by accident. There is
/// deliberately no `Display` impl.
#[derive(Clone, PartialEq, Eq, Hash)]
pub(crate) struct Secret(Arc<str>);

impl Secret {
    /// The secret text. Named so that every place that reveals it is easy to find.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl Deref for Secret {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Secret(s.into())
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Secret(s.into())
    }
}

impl From<Arc<str>> for Secret {
    fn from(s: Arc<str>) -> Self {
        Secret(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_text() {
        let s = Secret::from("hunter2");
        assert_eq!(format!("{s:?}"), "Secret(***)");
        assert_eq!(format!("{:?}", Some(s.clone())), "Some(Secret(***))");
        assert_eq!(&*s, "hunter2");
        assert_eq!(s.expose(), "hunter2");
    }
}
