/*
 * fio keeps its job table in System V shared memory (shmget/shmat), which the
 * bufaio test kernel does not have (no CONFIG_SYSVIPC). With --thread every
 * job is a thread of one process, so anonymous shared mappings serve the same
 * purpose. `cargo xtask bench` compiles this file and guest-bench preloads it
 * into fio through the dynamic loader (--preload). Nothing on fio's IO path
 * is touched.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stddef.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/shm.h>

#define MAXSEG 64

static struct {
	size_t size;
	void *addr;
	int used;
} segs[MAXSEG];

int shmget(key_t key, size_t size, int flag)
{
	(void)key;
	(void)flag;
	for (int i = 0; i < MAXSEG; i++) {
		if (!segs[i].used) {
			segs[i].used = 1;
			segs[i].size = size;
			segs[i].addr = NULL;
			return i + 1;
		}
	}
	errno = ENOSPC;
	return -1;
}

void *shmat(int id, const void *addr, int flag)
{
	(void)addr;
	(void)flag;
	if (id < 1 || id > MAXSEG || !segs[id - 1].used) {
		errno = EINVAL;
		return (void *)-1;
	}
	if (!segs[id - 1].addr) {
		void *p = mmap(NULL, segs[id - 1].size, PROT_READ | PROT_WRITE,
			       MAP_SHARED | MAP_ANONYMOUS, -1, 0);
		if (p == MAP_FAILED)
			return (void *)-1;
		segs[id - 1].addr = p;
	}
	return segs[id - 1].addr;
}

int shmdt(const void *addr)
{
	for (int i = 0; i < MAXSEG; i++) {
		if (segs[i].used && segs[i].addr == addr) {
			munmap(segs[i].addr, segs[i].size);
			segs[i].used = 0;
			segs[i].addr = NULL;
			return 0;
		}
	}
	errno = EINVAL;
	return -1;
}

int shmctl(int id, int cmd, struct shmid_ds *buf)
{
	if (id < 1 || id > MAXSEG || !segs[id - 1].used) {
		errno = EINVAL;
		return -1;
	}
	if (cmd == IPC_STAT && buf) {
		memset(buf, 0, sizeof(*buf));
		buf->shm_segsz = segs[id - 1].size;
	}
	return 0;
}
