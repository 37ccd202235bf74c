/*
 * The local stack's database process: mongo-java-server (a MongoDB wire-protocol server)
 * bound to one loopback address and port, on its H2 MVStore backend (one file) or, for the
 * database benchmark only, its memory backend.
 *
 * Upstream's own main (H2MongoServer) always binds localhost:27017 and keeps MVStore's
 * default of committing to disk once a second. This one takes the address, the port and the
 * file, and commits every 100 ms: the same window as mongod's default journal commit
 * interval, so an acknowledged write (w:1, j:false) is at most that old when the process is
 * killed with SIGKILL. SIGTERM closes the store cleanly.
 *
 * On a file it runs ScaleshopH2Backend (upstream's H2 backend with BSON storage, indexes in memory,
 * secondary indexes and snapshot replies: see there);
 * --upstream-backend runs upstream's H2 backend as it is, for the database benchmark.
 *
 * Usage: ScaleshopMongo --host 127.0.0.1 --port 27017 (--file data/scaleshop.mv | --memory) [--upstream-backend]
 */
import de.bwaldvogel.mongo.MongoBackend;
import de.bwaldvogel.mongo.MongoServer;
import de.bwaldvogel.mongo.backend.h2.H2Backend;
import de.bwaldvogel.mongo.backend.memory.MemoryBackend;
import org.h2.mvstore.MVStore;

public final class ScaleshopMongo {
    private static final int COMMIT_DELAY_MS = 100;
    private static final int CACHE_MB = 128;

    public static void main(String[] args) {
        String host = "127.0.0.1";
        int port = 27017;
        String file = null;
        boolean memory = false;
        boolean plain = false;
        for (int i = 0; i < args.length; i++) {
            switch (args[i]) {
                case "--host" -> host = args[++i];
                case "--port" -> port = Integer.parseInt(args[++i]);
                case "--file" -> file = args[++i];
                case "--memory" -> memory = true;
                case "--upstream-backend" -> plain = true;
                default -> usage("unknown argument " + args[i]);
            }
        }
        if (memory == (file != null)) {
            usage("give exactly one of --file PATH and --memory");
        }
        MongoBackend backend;
        if (memory) {
            backend = new MemoryBackend();
        } else {
            MVStore store = new MVStore.Builder()
                .fileName(file)
                .cacheSize(CACHE_MB)
                .open();
            store.setAutoCommitDelay(COMMIT_DELAY_MS);
            backend = plain ? new H2Backend(store) : new ScaleshopH2Backend(store);
        }
        MongoServer server = new MongoServer(backend);
        server.bind(host, port);
        Runtime.getRuntime().addShutdownHook(new Thread(server::shutdown, "shutdown"));
        System.out.printf("mongo-java-server listening on %s:%d (%s)%n", host, port, memory ? "memory" : file);
    }

    private static void usage(String problem) {
        System.err.println(problem);
        System.err.println("usage: ScaleshopMongo --host HOST --port PORT (--file PATH | --memory) [--upstream-backend]");
        System.exit(2);
    }
}
