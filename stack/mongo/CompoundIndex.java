/*
 * A non-unique secondary index for mongo-java-server: upstream accepts such indexes but ignores
 * them, so every query on a field other than `_id` or a unique key reads the whole collection.
 *
 * The index is kept in memory, ordered like MongoDB's (field by field, each ascending or
 * descending, BSON type order), and rebuilt from the documents when the database opens. It
 * answers:
 *   - which documents may match: equality (or `$eq`) on a prefix of its fields, then optionally
 *     a range (`$gt`, `$gte`, `$lt`, `$lte`) on the next field; or `$in` on the first field;
 *   - the documents in the order a sort asks for, when the sort's fields continue the equality
 *     prefix in the index's direction or the exact reverse (ScaleshopH2Collection reads a page by
 *     walking it, instead of reading and sorting every candidate);
 *   - an exact count when the query is nothing but equalities on index fields.
 * It may name more documents than match, never fewer: the collection checks the whole query
 * against every document it reads. Every document is indexed, missing fields as null, and array
 * values per element (multikey); once a field held an array, range and sort are not answered on it.
 */
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collection;
import java.util.Collections;
import java.util.HashMap;
import java.util.Iterator;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.NavigableMap;
import java.util.NoSuchElementException;
import java.util.Set;
import java.util.TreeMap;

import de.bwaldvogel.mongo.MongoCollection;
import de.bwaldvogel.mongo.backend.Index;
import de.bwaldvogel.mongo.backend.IndexKey;
import de.bwaldvogel.mongo.backend.KeyValue;
import de.bwaldvogel.mongo.backend.Missing;
import de.bwaldvogel.mongo.backend.Utils;
import de.bwaldvogel.mongo.backend.ValueComparator;
import de.bwaldvogel.mongo.bson.BsonRegularExpression;
import de.bwaldvogel.mongo.bson.Document;

final class CompoundIndex<P> extends Index<P> {
    private static final Object LOWEST = new Object();
    private static final Object HIGHEST = new Object();
    private static final Set<String> RANGE = Set.of("$gt", "$gte", "$lt", "$lte");

    private final List<String> fields = new ArrayList<>();
    private final List<Boolean> ascending = new ArrayList<>();
    // Kept small: 11 indexes of the catalog over 100,000 products once filled a 768 MB heap.
    // An entry's positions are a singleton until a second one arrives; a document's keys are
    // one list unless a field holds an array. A position is the document's `_id`, as in
    // upstream's H2 collection (H2Collection.addDocumentInternal), which is the only user.
    private final NavigableMap<List<Object>, Set<P>> entries;
    private final Map<P, List<List<Object>>> keysByPosition = new HashMap<>();
    private final Set<String> multikeyFields = new LinkedHashSet<>();

    /** A part of the index to read: from `low` to `high` (each may stand for "all below/above"). */
    record Range(List<Object> low, boolean lowInclusive, List<Object> high, boolean highInclusive) {
    }

    /** How a query narrows the index: the ranges to read, and how many leading fields are pinned by equality. */
    record Plan(List<Range> ranges, int equalityFields, boolean exact) {
    }

    CompoundIndex(String name, List<IndexKey> keys, boolean sparse) {
        super(name, keys, sparse);
        for (IndexKey key : keys) {
            fields.add(key.getKey());
            ascending.add(key.isAscending());
        }
        entries = new TreeMap<>(this::compareKeys);
    }

    private int compareKeys(List<Object> a, List<Object> b) {
        for (int i = 0; i < fields.size(); i++) {
            Object x = a.get(i);
            Object y = b.get(i);
            int order;
            if (x == y) {
                order = 0;
            } else if (x == LOWEST || y == HIGHEST) {
                order = -1;
            } else if (x == HIGHEST || y == LOWEST) {
                order = 1;
            } else {
                order = ValueComparator.asc().compare(x, y);
                if (!ascending.get(i)) {
                    order = -order;
                }
            }
            if (order != 0) {
                return order;
            }
        }
        return 0;
    }

    // ---- keeping the index ----------------------------------------------------------------

    private List<List<Object>> keysOf(Document document) {
        for (String field : fields) {
            if (Utils.getSubdocumentValueCollectionAware(document, field) instanceof Collection) {
                multikeyFields.add(field);
            }
        }
        Set<List<Object>> keys = new LinkedHashSet<>();
        for (KeyValue keyValue : getKeyValues(document)) {
            Object[] values = new Object[fields.size()];
            int i = 0;
            for (Object value : keyValue) {
                values[i++] = value instanceof Missing ? null : value;
            }
            keys.add(Arrays.asList(values));
        }
        return keys.size() == 1 ? List.of(keys.iterator().next()) : new ArrayList<>(keys);
    }

    @SuppressWarnings("unchecked")
    private P positionOf(Document document) {
        P position = (P) document.get("_id");
        return keysByPosition.containsKey(position) ? position : null;
    }

    @Override
    public P getPosition(Document document) {
        return positionOf(document);
    }

    @Override
    public void checkAdd(Document document, MongoCollection<P> collection) {
        // not unique: nothing to check
    }

    @Override
    public void add(Document document, P position, MongoCollection<P> collection) {
        List<List<Object>> keys = keysOf(document);
        for (List<Object> key : keys) {
            Set<P> positions = entries.get(key);
            if (positions == null) {
                entries.put(key, Collections.singleton(position));
            } else if (positions instanceof LinkedHashSet<P> many) {
                many.add(position);
            } else {
                Set<P> many = new LinkedHashSet<>(positions);
                many.add(position);
                entries.put(key, many);
            }
        }
        keysByPosition.put(position, keys);
    }

    @Override
    public P remove(Document document) {
        P position = positionOf(document);
        if (position != null) {
            unlink(position);
        }
        return position;
    }

    private void unlink(P position) {
        for (List<Object> key : keysByPosition.remove(position)) {
            Set<P> positions = entries.get(key);
            if (!(positions instanceof LinkedHashSet<P> many)) {
                entries.remove(key); // a singleton: this position's own
            } else if (many.remove(position) && many.isEmpty()) {
                entries.remove(key);
            }
        }
    }

    @Override
    public void checkUpdate(Document oldDocument, Document newDocument, MongoCollection<P> collection) {
        // not unique: nothing to check
    }

    @Override
    public void updateInPlace(Document oldDocument, Document newDocument, P position, MongoCollection<P> collection) {
        unlink(position);
        add(newDocument, position, collection);
    }

    @Override
    public long getCount() {
        return keysByPosition.size();
    }

    @Override
    public long getDataSize() {
        return 0;
    }

    @Override
    public void drop() {
        entries.clear();
        keysByPosition.clear();
    }

    // ---- answering queries ----------------------------------------------------------------

    /** A query operand as stored in the index, or null if it is not a plain value. */
    private Object operand(String field, Object value) {
        if (value == null || value instanceof Collection || value instanceof Document
            || BsonRegularExpression.isRegularExpression(value)) {
            return null;
        }
        // normalized the way getKeyValues normalizes stored values (numbers of every type compare equal)
        Object normalized = getKeyValues(new Document(field, value)).iterator().next().get(fields.indexOf(field));
        return normalized instanceof Missing ? null : normalized;
    }

    private List<Object> key(List<Object> prefix, Object next, Object filler) {
        List<Object> key = new ArrayList<>(prefix);
        if (next != null) {
            key.add(next);
        }
        while (key.size() < fields.size()) {
            key.add(filler);
        }
        return key;
    }

    /** How `query` narrows this index, or null if it does not constrain the first field. */
    Plan plan(Document query) {
        List<Object> prefix = new ArrayList<>();
        int pinned = 0;
        for (String field : fields) {
            if (!query.containsKey(field)) {
                break;
            }
            Object condition = query.get(field);
            Object value = condition instanceof Document ops && ops.keySet().equals(Set.of("$eq")) ? ops.get("$eq") : condition;
            Object stored = operand(field, value);
            if (stored == null) {
                break;
            }
            prefix.add(stored);
            pinned++;
        }
        if (pinned == fields.size()) {
            return new Plan(List.of(new Range(prefix, true, prefix, true)), pinned, true);
        }
        String next = fields.get(pinned);
        Object condition = query.get(next);
        if (condition instanceof Document operators && !operators.isEmpty()) {
            if (pinned == 0 && operators.keySet().equals(Set.of("$in")) && operators.get("$in") instanceof Collection<?> values
                && !values.isEmpty()) {
                List<Range> ranges = new ArrayList<>();
                for (Object value : values) {
                    Object stored = operand(next, value);
                    if (stored == null) {
                        return null;
                    }
                    List<Object> point = List.of(stored);
                    ranges.add(new Range(key(point, null, LOWEST), true, key(point, null, HIGHEST), true));
                }
                return new Plan(ranges, 0, true);
            }
            if (RANGE.containsAll(operators.keySet()) && !multikeyFields.contains(next)) {
                Object low = LOWEST;
                Object high = HIGHEST;
                boolean lowInclusive = true;
                boolean highInclusive = true;
                for (Map.Entry<String, Object> entry : operators.entrySet()) {
                    Object bound = operand(next, entry.getValue());
                    if (bound == null) {
                        return null;
                    }
                    boolean lower = entry.getKey().startsWith("$g");
                    boolean inclusive = entry.getKey().endsWith("e");
                    if (lower) {
                        low = bound;
                        lowInclusive = inclusive;
                    } else {
                        high = bound;
                        highInclusive = inclusive;
                    }
                }
                if (!ascending.get(pinned)) { // a descending field is stored from high to low
                    Object swap = low;
                    low = high == HIGHEST ? LOWEST : high;
                    high = swap == LOWEST ? HIGHEST : swap;
                    boolean swapInclusive = lowInclusive;
                    lowInclusive = highInclusive;
                    highInclusive = swapInclusive;
                }
                // the bounds themselves are compared with the whole key: pad to include every key at them
                List<Object> lowKey = key(prefix, low, lowInclusive ? LOWEST : HIGHEST);
                List<Object> highKey = key(prefix, high, highInclusive ? HIGHEST : LOWEST);
                return new Plan(List.of(new Range(lowKey, true, highKey, true)), pinned, false);
            }
        }
        if (pinned == 0) {
            return null;
        }
        return new Plan(List.of(new Range(key(prefix, null, LOWEST), true, key(prefix, null, HIGHEST), true)), pinned,
                        true);
    }

    private NavigableMap<List<Object>, Set<P>> read(Range range, boolean reverse) {
        if (compareKeys(range.low(), range.high()) > 0) {
            return Collections.emptyNavigableMap();
        }
        NavigableMap<List<Object>, Set<P>> part = entries.subMap(range.low(), range.lowInclusive(), range.high(),
                                                                 range.highInclusive());
        return reverse ? part.descendingMap() : part;
    }

    @Override
    public boolean canHandle(Document query) {
        return plan(query) != null;
    }

    @Override
    public Iterable<P> getPositions(Document query) {
        Set<P> positions = new LinkedHashSet<>();
        for (Range range : plan(query).ranges()) {
            read(range, false).values().forEach(positions::addAll);
        }
        return positions;
    }

    /** The number of matching documents, when the query is nothing but equalities the index answers exactly. */
    Integer exactCount(Document query) {
        Plan plan = plan(query);
        if (plan == null || !plan.exact()) {
            return null;
        }
        List<String> answered = fields.subList(0, Math.max(plan.equalityFields(), 1));
        if (!answered.containsAll(query.keySet())) {
            return null;
        }
        int count = 0;
        for (P ignored : getPositions(query)) {
            count++;
        }
        return count;
    }

    /**
     * The positions in the order `orderBy` asks for, as consecutive runs that the index cannot
     * order among themselves (the caller sorts each run with the whole sort), or null if the
     * index cannot give this order.
     */
    Iterable<List<P>> ordered(Document query, Document orderBy) {
        Plan plan = plan(query);
        if (plan != null && plan.ranges().size() != 1) {
            return null;
        }
        int start = plan == null ? 0 : plan.equalityFields();
        List<String> sortFields = new ArrayList<>(orderBy.keySet());
        int matched = 0;
        Boolean reverse = null;
        while (matched < sortFields.size() && start + matched < fields.size()) {
            String field = fields.get(start + matched);
            if (!sortFields.get(matched).equals(field) || multikeyFields.contains(field)
                || !(orderBy.get(field) instanceof Number direction)) {
                break;
            }
            boolean fieldReverse = (direction.intValue() > 0) != ascending.get(start + matched);
            if (reverse != null && reverse != fieldReverse) {
                break;
            }
            reverse = fieldReverse;
            matched++;
        }
        if (matched == 0) {
            return null;
        }
        Range range = plan != null ? plan.ranges().get(0)
            : new Range(key(List.of(), null, LOWEST), true, key(List.of(), null, HIGHEST), true);
        NavigableMap<List<Object>, Set<P>> part = read(range, reverse);
        int runLength = start + matched;
        return () -> new Runs(part.entrySet().iterator(), runLength);
    }

    /** Groups consecutive index entries whose first `runLength` fields are equal. */
    private final class Runs implements Iterator<List<P>> {
        private final Iterator<Map.Entry<List<Object>, Set<P>>> source;
        private final int runLength;
        private Map.Entry<List<Object>, Set<P>> pending;

        Runs(Iterator<Map.Entry<List<Object>, Set<P>>> source, int runLength) {
            this.source = source;
            this.runLength = runLength;
            this.pending = source.hasNext() ? source.next() : null;
        }

        @Override
        public boolean hasNext() {
            return pending != null;
        }

        @Override
        public List<P> next() {
            if (pending == null) {
                throw new NoSuchElementException();
            }
            List<Object> runKey = pending.getKey().subList(0, runLength);
            List<P> run = new ArrayList<>(pending.getValue());
            pending = null;
            while (source.hasNext()) {
                Map.Entry<List<Object>, Set<P>> entry = source.next();
                if (compareKeys(pad(entry.getKey().subList(0, runLength)), pad(runKey)) != 0) {
                    pending = entry;
                    break;
                }
                run.addAll(entry.getValue());
            }
            return run;
        }

        private List<Object> pad(List<Object> prefix) {
            return key(prefix, null, LOWEST);
        }
    }
}
