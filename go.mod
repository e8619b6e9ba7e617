module github.com/clamfuse/clamfuse

go 1.26.8

require (
	bazil.org/fuse v0.0.0-20230120002735-62a210ff1fd5
	github.com/BurntSushi/toml v1.6.0
	github.com/baruwa-enterprise/clamd v1.0.1
	github.com/hanwen/go-fuse/v2 v2.12.1
	golang.org/x/sync v0.25.0
	golang.org/x/sys v0.50.0
)
