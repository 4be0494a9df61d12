//! Reading chat turns: a line editor (history, editing, Ctrl-C clears the line) when standard
//! input is a terminal, plain lines otherwise; and Ctrl-C during a reply, which cancels only the
//! reply.

use anyhow::Result;
use rustyline::error::ReadlineError;
use rustyline::DefaultEditor;
use std::io::{BufRead, IsTerminal};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// What one read gave.
pub enum Line {
    Text(String),
    /// Ctrl-C at the prompt: the line is dropped, the chat goes on.
    Interrupted,
    /// Ctrl-D or the end of the input.
    End,
}

pub struct ChatInput {
    editor: Option<DefaultEditor>,
    lines: std::io::Lines<std::io::StdinLock<'static>>,
    /// Set by Ctrl-C while a reply is generated (the line editor reads Ctrl-C itself).
    interrupted: Arc<AtomicBool>,
}

impl ChatInput {
    pub fn new() -> Result<ChatInput> {
        let interrupted = Arc::new(AtomicBool::new(false));
        let editor = if std::io::stdin().is_terminal() {
            let flag = interrupted.clone();
            ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst))?;
            Some(DefaultEditor::new()?)
        } else {
            None
        };
        Ok(ChatInput {
            editor,
            lines: std::io::stdin().lock().lines(),
            interrupted,
        })
    }

    pub fn is_interactive(&self) -> bool {
        self.editor.is_some()
    }

    pub fn read_line(&mut self) -> Result<Line> {
        let Some(editor) = self.editor.as_mut() else {
            return Ok(match self.lines.next() {
                Some(l) => Line::Text(l?),
                None => Line::End,
            });
        };
        match editor.readline("> ") {
            Ok(line) => {
                if !line.trim().is_empty() {
                    let _ = editor.add_history_entry(line.as_str());
                }
                Ok(Line::Text(line))
            }
            Err(ReadlineError::Interrupted) => Ok(Line::Interrupted),
            Err(ReadlineError::Eof) => {
                // Leave the shell's prompt on a line of its own.
                eprintln!();
                Ok(Line::End)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Whether Ctrl-C was pressed since the last call.
    pub fn take_interrupt(&self) -> bool {
        self.interrupted.swap(false, Ordering::SeqCst)
    }
}
