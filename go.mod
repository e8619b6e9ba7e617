module github.com/clamfuse/clamfuse

go 1.26.8

require (
	bazil.org/fuse v0.0.0-20230120002735-62a210ff1fd5 // indirect
	github.com/BurntSushi/toml v1.6.0 // indirect
	github.com/baruwa-enterprise/clamd v1.0.1 // indirect
	github.com/hanwen/go-fuse/v2 v2.12.1 // indirect
	golang.org/x/sync v0.25.0 // indirect
	golang.org/x/sys v0.50.0 // indirect
)
