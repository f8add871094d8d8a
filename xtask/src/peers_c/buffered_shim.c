/*
 * LD_PRELOAD shim for soak/stress_ng_aio: stress-ng's aiol stressor opens
 * its file with O_DIRECT (falling back only on EINVAL), which ext2 and ext3
 * accept, so it would never reach the buffered AIO path the bufaio series
 * changes. This shim clears O_DIRECT in open()/open64()/openat()/
 * openat64() so every stressor does buffered IO. Nothing else changes.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdarg.h>
#include <sys/types.h>

#define WRAP(name, ...)                                                  \
	typedef int (*name##_fn)(__VA_ARGS__);                           \
	static name##_fn real_##name(void)                               \
	{                                                                \
		static name##_fn f;                                      \
		if (!f)                                                  \
			f = (name##_fn)dlsym(RTLD_NEXT, #name);          \
		return f;                                                \
	}

WRAP(open, const char *, int, ...)
WRAP(open64, const char *, int, ...)
WRAP(openat, int, const char *, int, ...)
WRAP(openat64, int, const char *, int, ...)

static mode_t mode_of(int flags, va_list ap)
{
	return (flags & (O_CREAT | O_TMPFILE)) ? (mode_t)va_arg(ap, int) : 0;
}

int open(const char *path, int flags, ...)
{
	va_list ap;
	mode_t mode;

	va_start(ap, flags);
	mode = mode_of(flags, ap);
	va_end(ap);
	return real_open()(path, flags & ~O_DIRECT, mode);
}

int open64(const char *path, int flags, ...)
{
	va_list ap;
	mode_t mode;

	va_start(ap, flags);
	mode = mode_of(flags, ap);
	va_end(ap);
	return real_open64()(path, flags & ~O_DIRECT, mode);
}

int openat(int dirfd, const char *path, int flags, ...)
{
	va_list ap;
	mode_t mode;

	va_start(ap, flags);
	mode = mode_of(flags, ap);
	va_end(ap);
	return real_openat()(dirfd, path, flags & ~O_DIRECT, mode);
}

int openat64(int dirfd, const char *path, int flags, ...)
{
	va_list ap;
	mode_t mode;

	va_start(ap, flags);
	mode = mode_of(flags, ap);
	va_end(ap);
	return real_openat64()(dirfd, path, flags & ~O_DIRECT, mode);
}
