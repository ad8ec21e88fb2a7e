//! Configuration errors that point at the file, line, column and key.

use std::fmt;

/// A configuration error. Its text always names the file, and for content errors the line,
/// column and dotted key, followed by the offending line with a caret under the column.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {source}")]
    Io {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(Box<Located>),
}

/// A located content error.
#[derive(Debug)]
pub struct Located {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub key: String,
    pub message: String,
    /// The text of the offending line, shown under the message.
    pub excerpt: String,
}

impl fmt::Display for Located {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: {}: {}", self.file, self.line, self.column, self.key, self.message)?;
        if !self.excerpt.is_empty() {
            let gutter = self.line.to_string().len();
            write!(
                f,
                "\n{:gutter$} |\n{} | {}\n{:gutter$} | {:>col$}",
                "",
                self.line,
                self.excerpt,
                "",
                "^",
                col = self.column
            )?;
        }
        Ok(())
    }
}

impl ConfigError {
    /// An error at byte `offset` of `text` (the file's content).
    pub fn at(file: &str, text: &str, offset: usize, key: &str, message: String) -> ConfigError {
        let offset = offset.min(text.len());
        let before = &text[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() + 1;
        let excerpt = text[line_start..].lines().next().unwrap_or("").to_string();
        ConfigError::Invalid(Box::new(Located {
            file: file.to_string(),
            line,
            column,
            key: key.to_string(),
            message,
            excerpt,
        }))
    }

    /// The located details, when this is a content error.
    pub fn located(&self) -> Option<&Located> {
        match self {
            ConfigError::Invalid(l) => Some(l),
            ConfigError::Io { .. } => None,
        }
    }
}
