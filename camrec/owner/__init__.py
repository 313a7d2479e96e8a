"""The owner's side: everything that needs the owner's identity (export, decrypt, verify -i, rekey,
the audit log). Runs on the owner's computer and treats every byte of a store as hostile.
May import: the foundation modules, crypto, store (read-only helpers). Never service, record or sources."""
