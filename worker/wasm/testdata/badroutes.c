// badroutes.c builds modules whose _routes is wrong in one way each
// (-DMODE=...), for the tests that a bad _routes fails the deployment.
// Rebuild with build.sh.
#include <stdio.h>
#include <stdlib.h>

__attribute__((export_name("_routes"))) void routes(void) {
#if MODE == 1 // traps
	__builtin_trap();
#elif MODE == 2 // prints nonsense
	printf("this is not a route table\n");
#elif MODE == 3 // names an export the module does not have
	printf("/hello hello\n/missing nowhere\n");
#elif MODE == 4 // prints nothing
#elif MODE == 5 // exits non-zero
	fprintf(stderr, "no routes today\n");
	exit(2);
#elif MODE == 6 // never returns
	for (volatile int i = 0;; i++) {
	}
#endif
}

__attribute__((export_name("hello"))) void hello(void) { printf("Content-Type: text/plain\n\nhello\n"); }

int main(void) {
	printf("Content-Type: text/plain\n\nmain\n");
	return 0;
}
