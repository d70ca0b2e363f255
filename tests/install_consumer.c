/* Built outside the tree against an installed libdash (dash.pc) by
 * install_test.sh: connects to the daemon at argv[1] and pings it. */
#include <dash/dash.h>
#include <stdio.h>

int main(int argc, char **argv) {
  dash_client *c;
  double ms;
  if (argc != 2)
    return 2;
  if (dash_connect(argv[1], &c) < 0 || dash_ping(c, &ms) < 0) {
    fprintf(stderr, "consumer: %s\n", dash_last_error());
    return 1;
  }
  dash_disconnect(c);
  printf("consumer: connected, ping %.3f ms\n", ms);
  return 0;
}
