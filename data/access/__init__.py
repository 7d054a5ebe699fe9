"""Who may do what: users and roles, the audit log, and showing untrusted text as text."""
