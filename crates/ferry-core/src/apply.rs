use crate::{Change, Entry};

/// Why a change could not be applied to a tree value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    /// The tree does not hold what the change expected at that path.
    #[error("'{0}' does not hold what the change expected")]
    Mismatch(String),
    /// The change's parent is missing or not a directory.
    #[error("parent of '{0}' is not a directory")]
    NoParent(String),
}

/// Applies `changes` to a tree value, checking each change's `old` like the filesystem applier
/// does. Used to predict a side after its transitions and by the property tests.
pub fn apply_changes(
    mut tree: Option<Entry>,
    changes: &[Change],
) -> Result<Option<Entry>, ApplyError> {
    for ch in changes {
        let path = ch.path.as_str();
        if let (Some(Entry::Directory(old)), Some(Entry::Directory(new))) = (&ch.old, &ch.new) {
            // A directory's permission bits alone (see `Change::is_meta`): its children stay.
            match tree.as_mut().and_then(|t| t.get_mut(path)) {
                Some(Entry::Directory(d)) if d.mode == old.mode => d.mode = new.mode,
                _ => return Err(ApplyError::Mismatch(path.to_owned())),
            }
            continue;
        }
        let Some(parent_path) = ch.path.parent() else {
            if tree != ch.old {
                return Err(ApplyError::Mismatch(path.to_owned()));
            }
            tree = ch.new.clone();
            continue;
        };
        let name = ch.path.name().unwrap_or_default();
        let Some(Entry::Directory(siblings)) = tree
            .as_mut()
            .and_then(|t| Entry::get_mut(t, parent_path.as_str()))
        else {
            if ch.old.is_none() && ch.new.is_none() {
                continue;
            }
            return Err(ApplyError::NoParent(path.to_owned()));
        };
        if siblings.get(name) != ch.old.as_ref() {
            return Err(ApplyError::Mismatch(path.to_owned()));
        }
        match &ch.new {
            Some(e) => {
                siblings.insert(name.to_owned(), e.clone());
            }
            None => {
                siblings.remove(name);
            }
        }
    }
    Ok(tree)
}
