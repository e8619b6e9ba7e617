// SPDX-License-Identifier: Apache-2.0
// Copyright: the clamfuse authors
//
// floorfs: the FUSE floor of the bench (test/cmd/bench, floor.go).
//
//	floorfs [-p] SRC MNT
//
// A single-threaded, read-only mirror of the directory SRC at MNT, over
// raw /dev/fuse (no libfuse): read one request, answer it, write the
// reply. It negotiates the kernel features clamfuse negotiates
// (fs/mount.go: ASYNC_READ, BIG_WRITES, PARALLEL_DIROPS, MAX_PAGES with
// max_pages 256 and max_write 1 MiB, POSIX_ACL, DONT_MASK,
// DO_READDIRPLUS | READDIRPLUS_AUTO, CACHE_SYMLINKS, HAS_EXPIRE_ONLY;
// max_readahead 1 MiB and the mount's bdi read_ahead_kb raised to 1024 as
// clamfuse does; not passthrough unless -p), answers opens with
// FOPEN_KEEP_CACHE and lets the kernel trust names and attributes for an
// hour, as clamfuse in its watched mode does. It does nothing else: no scanning, no acting as
// the caller, no watcher. It is what any FUSE server with these kernel
// features pays at the least: the bench's lower bound for clamfuse.
//
// It must run as root (mount(2)). SIGTERM, or the kernel ending the
// connection, detaches the mount and exits 0.

#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/fuse.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/sysmacros.h>
#include <sys/ioctl.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

/* FUSE passthrough (protocol 7.40, Linux 6.9): older <linux/fuse.h>
 * (Debian 12's is 7.38) lack it; the layout is the same, the fields
 * were padding. */
#ifdef FUSE_PASSTHROUGH
#define INIT_MAX_STACK_DEPTH(o) ((o)->max_stack_depth)
#define OPEN_BACKING_ID(o) ((o)->backing_id)
#else
#define FUSE_PASSTHROUGH (1ULL << 37)
#define FOPEN_PASSTHROUGH (1 << 7)
struct fuse_backing_map {
	int32_t fd;
	uint32_t flags;
	uint64_t padding;
};
#define FUSE_DEV_IOC_BACKING_OPEN _IOW(229, 1, struct fuse_backing_map)
#define FUSE_DEV_IOC_BACKING_CLOSE _IOW(229, 2, uint32_t)
#define INIT_MAX_STACK_DEPTH(o) ((o)->unused[0])
#define OPEN_BACKING_ID(o) (*(int32_t *)&(o)->padding)
#endif

#define TIMEOUT_SEC 3600     /* entry and attribute validity: 1 hour */
#define MAX_WRITE (1u << 20) /* max_write and the largest READ: 1 MiB */
#define READAHEAD (1u << 20)
#define BUF_SIZE (MAX_WRITE + 65536)

#ifndef FUSE_HAS_EXPIRE_ONLY
#define FUSE_HAS_EXPIRE_ONLY (1ULL << 35)
#endif

static const char *mnt;
static int passthrough; /* -p */
static int srcfd = -1;
static dev_t srcdev; /* the source's device: entries on another (mounts under SRC) are never "known" */
static int fusefd = -1;

static void die(const char *what)
{
	fprintf(stderr, "floorfs: %s: %s\n", what, strerror(errno));
	exit(1);
}

/* Nodes: node id -> backing path (relative to srcfd) and inode; a hash
 * from (dev, ino) to node id keeps ids stable per backing inode. Nodes
 * are never freed (the bench's trees are small), but FORGET is counted:
 * nlookup says whether the kernel still knows the node, so that
 * READDIRPLUS gives names only for those (see do_readdir). */
struct node {
	dev_t dev;
	ino_t ino;
	uint64_t nlookup; /* the kernel's references: LOOKUP and READDIRPLUS entries less FORGET */
	char *path;
	int32_t backing; /* -p: the backing id the node's open files share */
	uint32_t opens;  /* -p: open files sharing it */
};

static struct node *nodes;  /* index = node id; 0 unused, 1 the root */
static uint64_t nnodes, capnodes;
static uint64_t *hash;      /* node ids, 0 = empty */
static uint64_t hashsize;   /* a power of two */

static uint64_t hkey(dev_t dev, ino_t ino)
{
	uint64_t h = (uint64_t)ino * 0x9E3779B97F4A7C15ULL ^ (uint64_t)dev;
	return h ^ (h >> 29);
}

static void hinsert(uint64_t id)
{
	uint64_t i = hkey(nodes[id].dev, nodes[id].ino) & (hashsize - 1);
	while (hash[i] != 0)
		i = (i + 1) & (hashsize - 1);
	hash[i] = id;
}

static uint64_t node_for(const struct stat *st, const char *path)
{
	uint64_t i = hkey(st->st_dev, st->st_ino) & (hashsize - 1);
	for (; hash[i] != 0; i = (i + 1) & (hashsize - 1)) {
		struct node *n = &nodes[hash[i]];
		if (n->ino == st->st_ino && n->dev == st->st_dev) {
			if (strcmp(n->path, path) != 0) { /* renamed behind us */
				free(n->path);
				n->path = strdup(path);
				if (n->path == NULL)
					die("strdup");
			}
			return hash[i];
		}
	}
	if (nnodes == capnodes) {
		capnodes *= 2;
		nodes = realloc(nodes, capnodes * sizeof *nodes);
		if (nodes == NULL)
			die("realloc");
	}
	uint64_t id = nnodes++;
	nodes[id].dev = st->st_dev;
	nodes[id].ino = st->st_ino;
	nodes[id].nlookup = 0;
	nodes[id].backing = 0;
	nodes[id].opens = 0;
	nodes[id].path = strdup(path);
	if (nodes[id].path == NULL)
		die("strdup");
	if (nnodes * 2 > hashsize) {
		free(hash);
		hashsize *= 2;
		hash = calloc(hashsize, sizeof *hash);
		if (hash == NULL)
			die("calloc");
		for (uint64_t j = 1; j < nnodes; j++)
			hinsert(j);
	} else {
		hash[i] = id;
	}
	return id;
}

/* find returns the node of the backing inode ino of the source's device,
 * or 0. */
static uint64_t find(ino_t ino)
{
	uint64_t i = hkey(srcdev, ino) & (hashsize - 1);
	for (; hash[i] != 0; i = (i + 1) & (hashsize - 1)) {
		struct node *n = &nodes[hash[i]];
		if (n->ino == ino && n->dev == srcdev)
			return hash[i];
	}
	return 0;
}

/* known returns the node of the backing inode ino of the source's device
 * if the kernel holds it (nlookup > 0), else 0. */
static uint64_t known(ino_t ino)
{
	uint64_t id = find(ino);
	return id != 0 && nodes[id].nlookup > 0 ? id : 0;
}

static void forget(uint64_t id, uint64_t n)
{
	if (id == 0 || id >= nnodes)
		return;
	nodes[id].nlookup = nodes[id].nlookup > n ? nodes[id].nlookup - n : 0;
}

/* gone forgets the backing inode of node id, unlinked through the mount:
 * a new file that gets its inode number gets a new node (the node stays
 * in the hash, never matched again). */
static void gone(uint64_t id)
{
	if (id != 0 && id < nnodes)
		nodes[id].dev = (dev_t)-1;
}

static const char *node_path(uint64_t id)
{
	if (id == 0 || id >= nnodes)
		return NULL;
	return nodes[id].path;
}

/* child joins a directory's path and a name into buf. */
static int child(char *buf, size_t size, uint64_t parent, const char *name)
{
	const char *p = node_path(parent);
	if (p == NULL)
		return -ENOENT;
	int n = strcmp(p, ".") == 0 ? snprintf(buf, size, "%s", name)
				    : snprintf(buf, size, "%s/%s", p, name);
	if (n < 0 || (size_t)n >= size)
		return -ENAMETOOLONG;
	return 0;
}

static void fill_attr(struct fuse_attr *a, const struct stat *st)
{
	memset(a, 0, sizeof *a);
	a->ino = st->st_ino;
	a->size = st->st_size;
	a->blocks = st->st_blocks;
	a->atime = st->st_atim.tv_sec;
	a->mtime = st->st_mtim.tv_sec;
	a->ctime = st->st_ctim.tv_sec;
	a->atimensec = st->st_atim.tv_nsec;
	a->mtimensec = st->st_mtim.tv_nsec;
	a->ctimensec = st->st_ctim.tv_nsec;
	a->mode = st->st_mode;
	a->nlink = st->st_nlink;
	a->uid = st->st_uid;
	a->gid = st->st_gid;
	a->rdev = st->st_rdev;
	a->blksize = st->st_blksize;
}

static void fill_entry(struct fuse_entry_out *e, uint64_t id, const struct stat *st)
{
	memset(e, 0, sizeof *e);
	e->nodeid = id;
	e->entry_valid = TIMEOUT_SEC;
	e->attr_valid = TIMEOUT_SEC;
	fill_attr(&e->attr, st);
}

/* An open regular file: the descriptor, and with -p the node whose
 * backing id it shares. */
struct fileh {
	int fd;
	uint64_t node;
};

/* backing_open gives an open of node id the node's backing id: the one
 * its open files share, or fd registered. 0 and errno on failure. */
static int32_t backing_open(uint64_t id, int fd)
{
	struct node *n = &nodes[id];
	if (n->opens == 0) {
		struct fuse_backing_map map = {.fd = fd};
		int r = ioctl(fusefd, FUSE_DEV_IOC_BACKING_OPEN, &map);
		if (r <= 0) {
			if (r == 0)
				errno = EIO;
			return 0;
		}
		n->backing = r;
	}
	n->opens++;
	return n->backing;
}

/* backing_release drops an open of node id; the last closes the id. */
static void backing_release(uint64_t id)
{
	struct node *n = &nodes[id];
	if (n->opens == 0 || --n->opens > 0)
		return;
	uint32_t b = (uint32_t)n->backing;
	if (ioctl(fusefd, FUSE_DEV_IOC_BACKING_CLOSE, &b) != 0)
		fprintf(stderr, "floorfs: closing backing id %u: %s\n", b, strerror(errno));
	n->backing = 0;
}

/* Replies. */

static void reply_iov(uint64_t unique, int error, struct iovec *iov, int n)
{
	struct fuse_out_header h = {.error = error, .unique = unique};
	struct iovec v[3];
	v[0].iov_base = &h;
	v[0].iov_len = sizeof h;
	h.len = sizeof h;
	for (int i = 0; i < n; i++) {
		v[i + 1] = iov[i];
		h.len += iov[i].iov_len;
	}
	if (writev(fusefd, v, n + 1) < 0 && errno != ENOENT)
		/* ENOENT: the request was interrupted meanwhile. */
		fprintf(stderr, "floorfs: writing a reply: %s\n", strerror(errno));
}

static void reply_err(uint64_t unique, int err) /* err > 0 */
{
	reply_iov(unique, -err, NULL, 0);
}

static void reply(uint64_t unique, const void *data, size_t len)
{
	struct iovec v = {.iov_base = (void *)data, .iov_len = len};
	reply_iov(unique, 0, &v, len ? 1 : 0);
}

/* Directory handles: every entry read at OPENDIR; the READDIR offset is
 * an index into them. */
struct dirent_rec {
	ino_t ino;
	unsigned char type;
	char *name;
};

struct dirh {
	uint64_t node;
	size_t n;
	struct dirent_rec *ents;
};

static int open_dir(uint64_t id, struct dirh **out)
{
	const char *p = node_path(id);
	if (p == NULL)
		return ENOENT;
	int fd = openat(srcfd, p, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return errno;
	DIR *d = fdopendir(fd);
	if (d == NULL) {
		int e = errno;
		close(fd);
		return e;
	}
	struct dirh *h = calloc(1, sizeof *h);
	size_t cap = 16;
	if (h == NULL)
		die("calloc");
	h->node = id;
	h->ents = malloc(cap * sizeof *h->ents);
	if (h->ents == NULL)
		die("malloc");
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		if (h->n == cap) {
			cap *= 2;
			h->ents = realloc(h->ents, cap * sizeof *h->ents);
			if (h->ents == NULL)
				die("realloc");
		}
		h->ents[h->n].ino = de->d_ino;
		h->ents[h->n].type = de->d_type;
		h->ents[h->n].name = strdup(de->d_name);
		if (h->ents[h->n].name == NULL)
			die("strdup");
		h->n++;
	}
	closedir(d);
	*out = h;
	return 0;
}

static void free_dir(struct dirh *h)
{
	for (size_t i = 0; i < h->n; i++)
		free(h->ents[i].name);
	free(h->ents);
	free(h);
}

static char rbuf[BUF_SIZE];          /* one request */
static char obuf[MAX_WRITE];         /* READ and READDIR replies */

static void do_readdir(uint64_t unique, const struct fuse_read_in *in, int plus)
{
	struct dirh *h = (struct dirh *)(uintptr_t)in->fh;
	size_t size = in->size < sizeof obuf ? in->size : sizeof obuf;
	size_t used = 0;
	char path[PATH_MAX];
	for (uint64_t i = in->offset; i < h->n; i++) {
		struct dirent_rec *r = &h->ents[i];
		size_t namelen = strlen(r->name);
		size_t rec = plus ? FUSE_DIRENT_ALIGN(FUSE_NAME_OFFSET_DIRENTPLUS + namelen)
				  : FUSE_DIRENT_ALIGN(FUSE_NAME_OFFSET + namelen);
		if (used + rec > size)
			break;
		struct fuse_dirent *d;
		if (plus) {
			struct fuse_direntplus *dp = (struct fuse_direntplus *)(obuf + used);
			uint64_t id = known(r->ino);
			memset(&dp->entry_out, 0, sizeof dp->entry_out);
			if (id == 0) {
				struct stat st;
				if (child(path, sizeof path, h->node, r->name) != 0 ||
				    fstatat(srcfd, path, &st, AT_SYMLINK_NOFOLLOW) != 0)
					continue; /* gone since OPENDIR */
				id = node_for(&st, path);
				nodes[id].nlookup++;
				fill_entry(&dp->entry_out, id, &st);
			}
			/* A node the kernel knows goes with its name only (node
			 * id 0: the kernel leaves its inode as it is), as
			 * clamfuse does: attributes sent again for a known inode
			 * make the kernel drop its cached ACLs (and so ask
			 * GETXATTR again at the next permission check or ls -l). */
			d = &dp->dirent;
		} else {
			d = (struct fuse_dirent *)(obuf + used);
		}
		d->ino = r->ino;
		d->off = i + 1;
		d->namelen = namelen;
		d->type = r->type;
		memcpy(d->name, r->name, namelen);
		memset(d->name + namelen, 0, rec - (plus ? FUSE_NAME_OFFSET_DIRENTPLUS : FUSE_NAME_OFFSET) - namelen);
		used += rec;
	}
	reply(unique, obuf, used);
}

static void do_init(uint64_t unique, const struct fuse_init_in *in)
{
	struct fuse_init_out out;
	memset(&out, 0, sizeof out);
	if (in->major != FUSE_KERNEL_VERSION) {
		/* Tell the kernel our major; it then sends INIT again. */
		out.major = FUSE_KERNEL_VERSION;
		out.minor = FUSE_KERNEL_MINOR_VERSION;
		reply(unique, &out, sizeof out);
		return;
	}
	uint64_t want = FUSE_ASYNC_READ | FUSE_BIG_WRITES | FUSE_PARALLEL_DIROPS | FUSE_MAX_PAGES |
			FUSE_POSIX_ACL | FUSE_DONT_MASK | FUSE_DO_READDIRPLUS | FUSE_READDIRPLUS_AUTO |
			FUSE_CACHE_SYMLINKS | FUSE_HAS_EXPIRE_ONLY;
	if (passthrough)
		want |= FUSE_PASSTHROUGH;
	uint64_t offered = in->flags;
	if (in->flags & FUSE_INIT_EXT)
		offered |= (uint64_t)in->flags2 << 32;
	if (passthrough && !(offered & FUSE_PASSTHROUGH)) {
		fprintf(stderr, "floorfs: -p: the kernel does not offer FUSE passthrough (Linux 6.9+, CONFIG_FUSE_PASSTHROUGH)\n");
		umount2(mnt, MNT_DETACH);
		exit(1);
	}
	uint64_t granted = offered & want;
	if (granted >> 32)
		granted |= FUSE_INIT_EXT;
	out.major = FUSE_KERNEL_VERSION;
	out.minor = in->minor < FUSE_KERNEL_MINOR_VERSION ? in->minor : FUSE_KERNEL_MINOR_VERSION;
	out.max_readahead = READAHEAD;
	out.flags = (uint32_t)granted;
	out.flags2 = (uint32_t)(granted >> 32);
	out.max_write = MAX_WRITE;
	if (granted & FUSE_MAX_PAGES)
		out.max_pages = MAX_WRITE / sysconf(_SC_PAGESIZE);
	if (granted & FUSE_PASSTHROUGH)
		INIT_MAX_STACK_DEPTH(&out) = 1; /* backing files on a filesystem that does not stack */
	reply(unique, &out, sizeof out);
}

/* set_readahead raises the mount's readahead to 1 MiB, as clamfuse does
 * (the kernel takes no more than its default from INIT): the bdi is the
 * mount's device, from /proc/self/mountinfo (a stat of MNT would ask us). */
static void set_readahead(void)
{
	FILE *f = fopen("/proc/self/mountinfo", "re");
	if (f == NULL)
		return;
	char line[4096], dev[64] = "";
	while (fgets(line, sizeof line, f) != NULL) {
		char d[64], mp[PATH_MAX];
		if (sscanf(line, "%*s %*s %63s %*s %4095s", d, mp) == 2 && strcmp(mp, mnt) == 0)
			snprintf(dev, sizeof dev, "%s", d); /* the last, topmost */
	}
	fclose(f);
	if (dev[0] == '\0')
		return;
	char p[128];
	snprintf(p, sizeof p, "/sys/class/bdi/%s/read_ahead_kb", dev);
	int fd = open(p, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return;
	char kb[16];
	int n = snprintf(kb, sizeof kb, "%u", READAHEAD / 1024);
	if (write(fd, kb, n) != n)
		fprintf(stderr, "floorfs: %s: %s\n", p, strerror(errno));
	close(fd);
}

/* open_file answers an OPEN (st NULL) or a CREATE of node id with fd:
 * FOPEN_KEEP_CACHE, or with -p for a regular file FOPEN_PASSTHROUGH and
 * the node's backing id. */
static void open_file(uint64_t unique, uint64_t id, int fd, const struct stat *st)
{
	struct fileh *f = malloc(sizeof *f);
	if (f == NULL)
		die("malloc");
	f->fd = fd;
	f->node = id;
	struct fuse_open_out out = {.fh = (uint64_t)(uintptr_t)f, .open_flags = FOPEN_KEEP_CACHE};
	if (passthrough) {
		int32_t b = backing_open(id, fd);
		if (b == 0) {
			/* The floor never serves data itself with -p: fail. */
			int e = errno;
			fprintf(stderr, "floorfs: FUSE_DEV_IOC_BACKING_OPEN %s: %s\n", nodes[id].path, strerror(e));
			close(fd);
			free(f);
			reply_err(unique, e);
			return;
		}
		out.open_flags = FOPEN_PASSTHROUGH;
		OPEN_BACKING_ID(&out) = b;
	}
	if (st == NULL) {
		reply(unique, &out, sizeof out);
		return;
	}
	struct {
		struct fuse_entry_out e;
		struct fuse_open_out o;
	} both;
	fill_entry(&both.e, id, st);
	both.o = out;
	reply(unique, &both, sizeof both);
}

/* do_setattr: size (ftruncate), mode, times; owners are not changed. */
static void do_setattr(uint64_t unique, uint64_t id, const struct fuse_setattr_in *in)
{
	const char *p = node_path(id);
	if (p == NULL) {
		reply_err(unique, ENOENT);
		return;
	}
	if (!passthrough) {
		reply_err(unique, EROFS);
		return;
	}
	int fd = (in->valid & FATTR_FH) ? ((const struct fileh *)(uintptr_t)in->fh)->fd : -1;
	int own = -1;
	if (fd < 0) {
		own = openat(srcfd, p, O_PATH | O_NOFOLLOW | O_CLOEXEC);
		if (own < 0) {
			reply_err(unique, errno);
			return;
		}
		fd = own;
	}
	char proc[64];
	snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
	int r = 0;
	if (in->valid & FATTR_SIZE)
		r = truncate(proc, (off_t)in->size);
	if (r == 0 && (in->valid & FATTR_MODE))
		r = chmod(proc, in->mode & 07777);
	if (r == 0 && (in->valid & (FATTR_ATIME | FATTR_MTIME))) {
		struct timespec ts[2] = {{.tv_nsec = UTIME_OMIT}, {.tv_nsec = UTIME_OMIT}};
		if (in->valid & FATTR_ATIME)
			ts[0] = (in->valid & FATTR_ATIME_NOW) ? (struct timespec){.tv_nsec = UTIME_NOW}
							      : (struct timespec){in->atime, in->atimensec};
		if (in->valid & FATTR_MTIME)
			ts[1] = (in->valid & FATTR_MTIME_NOW) ? (struct timespec){.tv_nsec = UTIME_NOW}
							      : (struct timespec){in->mtime, in->mtimensec};
		r = utimensat(AT_FDCWD, proc, ts, 0);
	}
	struct stat st;
	if (r == 0)
		r = fstatat(srcfd, p, &st, AT_SYMLINK_NOFOLLOW);
	int e = errno;
	if (own >= 0)
		close(own);
	if (r != 0) {
		reply_err(unique, e);
		return;
	}
	struct fuse_attr_out out;
	memset(&out, 0, sizeof out);
	out.attr_valid = TIMEOUT_SEC;
	fill_attr(&out.attr, &st);
	reply(unique, &out, sizeof out);
}

static void handle(const struct fuse_in_header *h, const void *arg)
{
	uint64_t u = h->unique;
	char path[PATH_MAX];
	struct stat st;

	switch (h->opcode) {
	case FUSE_INIT:
		do_init(u, arg);
		set_readahead();
		return;
	case FUSE_LOOKUP: {
		int e = child(path, sizeof path, h->nodeid, arg);
		if (e != 0) {
			reply_err(u, -e);
			return;
		}
		if (fstatat(srcfd, path, &st, AT_SYMLINK_NOFOLLOW) != 0) {
			reply_err(u, errno);
			return;
		}
		struct fuse_entry_out out;
		uint64_t id = node_for(&st, path);
		nodes[id].nlookup++;
		fill_entry(&out, id, &st);
		reply(u, &out, sizeof out);
		return;
	}
	case FUSE_FORGET: /* no reply */
		forget(h->nodeid, ((const struct fuse_forget_in *)arg)->nlookup);
		return;
	case FUSE_BATCH_FORGET: {
		const struct fuse_batch_forget_in *in = arg;
		const struct fuse_forget_one *f = (const void *)(in + 1);
		for (uint32_t i = 0; i < in->count; i++)
			forget(f[i].nodeid, f[i].nlookup);
		return;
	}
	case FUSE_INTERRUPT:
		return; /* no reply */
	case FUSE_GETATTR: {
		const char *p = node_path(h->nodeid);
		if (p == NULL) {
			reply_err(u, ENOENT);
			return;
		}
		if (fstatat(srcfd, p, &st, AT_SYMLINK_NOFOLLOW) != 0) {
			reply_err(u, errno);
			return;
		}
		struct fuse_attr_out out;
		memset(&out, 0, sizeof out);
		out.attr_valid = TIMEOUT_SEC;
		fill_attr(&out.attr, &st);
		reply(u, &out, sizeof out);
		return;
	}
	case FUSE_OPEN: {
		const struct fuse_open_in *in = arg;
		const char *p = node_path(h->nodeid);
		if (p == NULL) {
			reply_err(u, ENOENT);
			return;
		}
		int acc = in->flags & O_ACCMODE;
		if (acc != O_RDONLY && !passthrough) {
			reply_err(u, EROFS);
			return;
		}
		int fd = openat(srcfd, p, acc | (in->flags & (O_APPEND | O_TRUNC)) | O_NOFOLLOW | O_CLOEXEC);
		if (fd < 0) {
			reply_err(u, errno);
			return;
		}
		open_file(u, h->nodeid, fd, NULL);
		return;
	}
	case FUSE_CREATE: {
		const struct fuse_create_in *in = arg;
		const char *name = (const char *)(in + 1);
		if (!passthrough) {
			reply_err(u, EROFS);
			return;
		}
		int e = child(path, sizeof path, h->nodeid, name);
		if (e != 0) {
			reply_err(u, -e);
			return;
		}
		int fd = openat(srcfd, path, (in->flags & (O_ACCMODE | O_APPEND | O_TRUNC | O_EXCL)) | O_CREAT | O_NOFOLLOW | O_CLOEXEC,
				in->mode & ~in->umask & 07777);
		if (fd < 0) {
			reply_err(u, errno);
			return;
		}
		if (fstat(fd, &st) != 0) {
			reply_err(u, errno);
			close(fd);
			return;
		}
		uint64_t id = node_for(&st, path);
		nodes[id].nlookup++;
		open_file(u, id, fd, &st);
		return;
	}
	case FUSE_READ: {
		const struct fuse_read_in *in = arg;
		const struct fileh *f = (const struct fileh *)(uintptr_t)in->fh;
		size_t size = in->size < sizeof obuf ? in->size : sizeof obuf;
		ssize_t n = pread(f->fd, obuf, size, (off_t)in->offset);
		if (n < 0) {
			reply_err(u, errno);
			return;
		}
		reply(u, obuf, (size_t)n);
		return;
	}
	case FUSE_RELEASE: {
		const struct fuse_release_in *in = arg;
		struct fileh *f = (struct fileh *)(uintptr_t)in->fh;
		if (passthrough)
			backing_release(f->node);
		close(f->fd);
		free(f);
		reply(u, NULL, 0);
		return;
	}
	case FUSE_FSYNC: {
		const struct fuse_fsync_in *in = arg;
		const struct fileh *f = (const struct fileh *)(uintptr_t)in->fh;
		int r = (in->fsync_flags & 1) ? fdatasync(f->fd) : fsync(f->fd);
		if (r != 0)
			reply_err(u, errno);
		else
			reply(u, NULL, 0);
		return;
	}
	case FUSE_SETATTR:
		do_setattr(u, h->nodeid, arg);
		return;
	case FUSE_UNLINK: {
		int e = child(path, sizeof path, h->nodeid, arg);
		if (e != 0) {
			reply_err(u, -e);
			return;
		}
		if (!passthrough) {
			reply_err(u, EROFS);
			return;
		}
		if (fstatat(srcfd, path, &st, AT_SYMLINK_NOFOLLOW) != 0 || unlinkat(srcfd, path, 0) != 0) {
			reply_err(u, errno);
			return;
		}
		if (st.st_nlink <= 1 && st.st_dev == srcdev)
			gone(find(st.st_ino));
		reply(u, NULL, 0);
		return;
	}
	case FUSE_OPENDIR: {
		struct dirh *d = NULL;
		int e = open_dir(h->nodeid, &d);
		if (e != 0) {
			reply_err(u, e);
			return;
		}
		struct fuse_open_out out = {.fh = (uint64_t)(uintptr_t)d};
		reply(u, &out, sizeof out);
		return;
	}
	case FUSE_READDIR:
	case FUSE_READDIRPLUS:
		do_readdir(u, arg, h->opcode == FUSE_READDIRPLUS);
		return;
	case FUSE_RELEASEDIR: {
		const struct fuse_release_in *in = arg;
		free_dir((struct dirh *)(uintptr_t)in->fh);
		reply(u, NULL, 0);
		return;
	}
	case FUSE_GETXATTR: {
		const char *name = (const char *)arg + sizeof(struct fuse_getxattr_in);
		/* As clamfuse: no label is "not supported", which stops the
		 * kernel asking for every file; the bench's files have no
		 * other attributes (POSIX ACLs included). */
		reply_err(u, strcmp(name, "security.selinux") == 0 ? EOPNOTSUPP : ENODATA);
		return;
	}
	case FUSE_LISTXATTR: {
		const struct fuse_getxattr_in *in = arg;
		if (in->size == 0) {
			struct fuse_getxattr_out out = {.size = 0};
			reply(u, &out, sizeof out);
		} else {
			reply(u, NULL, 0);
		}
		return;
	}
	case FUSE_READLINK: {
		const char *p = node_path(h->nodeid);
		if (p == NULL) {
			reply_err(u, ENOENT);
			return;
		}
		ssize_t n = readlinkat(srcfd, p, obuf, PATH_MAX);
		if (n < 0) {
			reply_err(u, errno);
			return;
		}
		reply(u, obuf, (size_t)n);
		return;
	}
	case FUSE_STATFS: {
		struct statvfs sv;
		if (fstatvfs(srcfd, &sv) != 0) {
			reply_err(u, errno);
			return;
		}
		struct fuse_statfs_out out;
		memset(&out, 0, sizeof out);
		out.st.blocks = sv.f_blocks;
		out.st.bfree = sv.f_bfree;
		out.st.bavail = sv.f_bavail;
		out.st.files = sv.f_files;
		out.st.ffree = sv.f_ffree;
		out.st.bsize = sv.f_bsize;
		out.st.namelen = sv.f_namemax;
		out.st.frsize = sv.f_frsize;
		reply(u, &out, sizeof out);
		return;
	}
	case FUSE_ACCESS:
	case FUSE_DESTROY:
		reply(u, NULL, 0);
		return;
	case FUSE_FLUSH: /* as clamfuse: the kernel stops sending it */
	default:
		reply_err(u, ENOSYS);
		return;
	}
}

static void on_term(int sig)
{
	(void)sig;
	/* Async-signal-safe: two system calls. */
	umount2(mnt, MNT_DETACH);
	_exit(0);
}

int main(int argc, char **argv)
{
	if (argc == 4 && strcmp(argv[1], "-p") == 0) {
		passthrough = 1;
		argv++;
		argc--;
	}
	if (argc != 3) {
		fprintf(stderr, "usage: floorfs [-p] SRC MNT\n");
		return 2;
	}
	static char mntbuf[PATH_MAX];
	if (realpath(argv[2], mntbuf) == NULL)
		die(argv[2]);
	mnt = mntbuf;
	srcfd = open(argv[1], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (srcfd < 0)
		die(argv[1]);

	struct stat st;
	if (fstat(srcfd, &st) != 0)
		die(argv[1]);
	srcdev = st.st_dev;
	capnodes = 1024;
	nodes = calloc(capnodes, sizeof *nodes);
	hashsize = 4096;
	hash = calloc(hashsize, sizeof *hash);
	if (nodes == NULL || hash == NULL)
		die("calloc");
	nnodes = 1; /* node id 0 is no node */
	if (node_for(&st, ".") != FUSE_ROOT_ID) {
		fprintf(stderr, "floorfs: root is not node 1\n");
		return 1;
	}

	fusefd = open("/dev/fuse", O_RDWR | O_CLOEXEC);
	if (fusefd < 0)
		die("/dev/fuse");
	char opts[256];
	snprintf(opts, sizeof opts,
		 "fd=%d,rootmode=40000,user_id=0,group_id=0,default_permissions,allow_other", fusefd);
	if (mount(argv[1], mnt, "fuse.floorfs", MS_NOSUID | MS_NODEV, opts) != 0)
		die("mount");

	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_term;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);

	for (;;) {
		ssize_t n = read(fusefd, rbuf, sizeof rbuf);
		if (n < 0) {
			if (errno == EINTR || errno == EAGAIN || errno == ENOENT)
				continue; /* ENOENT: a request interrupted before we read it */
			if (errno == ENODEV)
				break; /* unmounted */
			die("reading /dev/fuse");
		}
		if ((size_t)n < sizeof(struct fuse_in_header))
			continue;
		const struct fuse_in_header *h = (const struct fuse_in_header *)rbuf;
		handle(h, rbuf + sizeof *h);
	}
	umount2(mnt, MNT_DETACH);
	return 0;
}
