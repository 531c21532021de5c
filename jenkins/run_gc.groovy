// run_gc.groovy: asks the controller's JVM for a full garbage collection and
// prints how much heap it gave back. Run by the util-slave-manager-garbage-collector
// job as a system Groovy step (Groovy plugin); needs no Monitoring plugin.
// In the script-security sandbox it needs exactly the signatures listed in
// jenkins/jobs/script-approvals.txt (tests/groovy checks that they match).
Runtime runtime = Runtime.getRuntime()
long usedBefore = runtime.totalMemory() - runtime.freeMemory()
System.gc()
long usedAfter = runtime.totalMemory() - runtime.freeMemory()
long freed = usedBefore > usedAfter ? usedBefore - usedAfter : 0
println "Garbage collector executed: ${freed} freed."
