/* Preloaded into the guest by the pinned QEMU counter (ci/qemu-sysroot.sh builds it).
   Rust's std seeds every HashMap from getrandom(2), which qemu-user forwards to the
   host RNG; tract builds its graphs with such maps, so the allocation history, and with
   it the instruction count of the measured inference, changed from run to run by a few
   thousand instructions. Fixed bytes make the counts identical. Never used on a board. */
#include <stddef.h>
#include <sys/types.h>

ssize_t getrandom(void *buf, size_t len, unsigned int flags) {
  unsigned char *bytes = buf;
  (void)flags;
  for (size_t i = 0; i < len; i++) bytes[i] = (unsigned char)(i * 131u + 7u);
  return (ssize_t)len;
}
