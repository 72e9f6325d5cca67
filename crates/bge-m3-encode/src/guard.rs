//! An output must never be one of the inputs: `-o corpus.jsonl corpus.jsonl` would empty the
//! corpus before it is read. Checked before anything is opened for writing, by device and
//! inode, so that a symbolic or a hard link to an input is caught as the input itself; stdin
//! counts when it is redirected from a file, and an input directory when the output would be
//! one of the files its walk reads.

use std::fs::{File, Metadata};
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// A file as the file system knows it (device and inode), with the path it was named by.
#[derive(Debug, Clone)]
pub struct FileId {
    device: u64,
    inode: u64,
    path: PathBuf,
}

impl FileId {
    pub fn new(path: &Path, metadata: &Metadata) -> Self {
        Self {
            device: metadata.dev(),
            inode: metadata.ino(),
            path: path.to_path_buf(),
        }
    }

    /// What stdin reads from (a file, a pipe, a terminal), if it can be asked.
    pub fn of_stdin() -> Option<Self> {
        let descriptor = io::stdin().as_fd().try_clone_to_owned().ok()?;
        let metadata = File::from(descriptor).metadata().ok()?;
        Some(Self::new(Path::new("stdin"), &metadata))
    }

    fn same(&self, metadata: &Metadata) -> bool {
        self.device == metadata.dev() && self.inode == metadata.ino()
    }
}

/// What a run reads: its input files (those found in directories included), the directories
/// it walked, and stdin.
#[derive(Debug, Default)]
pub struct InputFiles {
    pub files: Vec<FileId>,
    /// Canonical paths.
    pub dirs: Vec<PathBuf>,
    pub stdin: Option<FileId>,
}

/// A path the run may write, and what it is to the user (`--output`, "the output's manifest").
pub struct Written<'a> {
    pub path: PathBuf,
    pub what: &'a str,
}

/// Refuses when one of `written` is an input, or would be read by walking an input directory
/// (a `.txt` or `.md` file below it).
pub fn check(inputs: &InputFiles, written: &[Written<'_>]) -> Result<(), String> {
    for Written { path, what } in written {
        if let Ok(metadata) = std::fs::metadata(path) {
            let input = inputs
                .files
                .iter()
                .chain(&inputs.stdin)
                .find(|input| input.same(&metadata));
            if let Some(input) = input {
                let link = if input.path == *path {
                    ""
                } else {
                    " (the same file under another name)"
                };
                return Err(format!(
                    "{what} {} is the input {}{link}: writing it would destroy the input; \
                     choose another output file",
                    path.display(),
                    input.path.display(),
                ));
            }
        }
        if crate::input::is_document(path) {
            let parent = match path.parent() {
                Some(parent) if !parent.as_os_str().is_empty() => parent,
                _ => Path::new("."),
            };
            if let Ok(parent) = parent.canonicalize() {
                if let Some(dir) = inputs.dirs.iter().find(|dir| parent.starts_with(dir)) {
                    return Err(format!(
                        "{what} {} is inside the input directory {}, whose .txt and .md files \
                         are read as documents: it would be read as one; choose another name \
                         or directory",
                        path.display(),
                        dir.display(),
                    ));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(paths: &[&Path], dirs: &[&Path]) -> InputFiles {
        InputFiles {
            files: paths
                .iter()
                .map(|p| FileId::new(p, &std::fs::metadata(p).unwrap()))
                .collect(),
            dirs: dirs.iter().map(|d| d.canonicalize().unwrap()).collect(),
            stdin: None,
        }
    }

    fn output(path: PathBuf) -> Vec<Written<'static>> {
        vec![Written {
            path,
            what: "--output",
        }]
    }

    #[test]
    fn an_input_through_any_name_is_refused_and_another_file_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let corpus = dir.path().join("c.jsonl");
        std::fs::write(&corpus, "{}\n").unwrap();
        let symlink = dir.path().join("link.jsonl");
        std::os::unix::fs::symlink(&corpus, &symlink).unwrap();
        let hard = dir.path().join("hard.jsonl");
        std::fs::hard_link(&corpus, &hard).unwrap();
        let read = inputs(&[&corpus], &[]);
        for path in [&corpus, &symlink, &hard] {
            let error = check(&read, &output(path.clone())).unwrap_err();
            assert!(
                error.starts_with(&format!(
                    "--output {} is the input {}",
                    path.display(),
                    corpus.display()
                )),
                "{error}"
            );
        }
        let other = dir.path().join("out.jsonl");
        assert!(check(&read, &output(other.clone())).is_ok());
        std::fs::write(&other, "").unwrap();
        assert!(check(&read, &output(other)).is_ok());
    }

    #[test]
    fn a_document_file_inside_an_input_directory_is_refused_even_before_it_exists() {
        let dir = tempfile::tempdir().unwrap();
        let docs = dir.path().join("docs");
        std::fs::create_dir_all(docs.join("sub")).unwrap();
        let read = inputs(&[], &[&docs]);
        let error = check(&read, &output(docs.join("sub/vectors.md"))).unwrap_err();
        assert!(error.contains("is inside the input directory"), "{error}");
        // Not a document the walk reads, or outside the directory: fine.
        assert!(check(&read, &output(docs.join("vectors.jsonl"))).is_ok());
        assert!(check(&read, &output(dir.path().join("vectors.md"))).is_ok());
    }
}
