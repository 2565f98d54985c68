-- Each version pins the package sizes it was judged with, as it pins its images: a stored
-- version must never be re-judged by today's package catalogue (mariposa.toml), or a changed
-- [packages] table would make every stored version invalid and the daemon with them.
-- JSON {"name": {"memory": bytes, "cpus": n}}; NULL for versions made before this column.
ALTER TABLE versions ADD COLUMN packages TEXT;
