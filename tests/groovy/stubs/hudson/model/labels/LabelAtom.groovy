package hudson.model.labels

import hudson.model.Label

/** hudson.model.labels.LabelAtom: one label word. */
class LabelAtom extends Label implements Comparable<LabelAtom> {
    LabelAtom(String name) { super(name) }

    int compareTo(LabelAtom o) { name <=> o.name }

    static LabelAtom get(String name) { new LabelAtom(name) }
}
